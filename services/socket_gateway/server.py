"""How the gateway serves: eventlet's WSGI server (the other services run waitress).

``__main__`` has monkey-patched the standard library before anything else was imported.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from . import wsfast
from .config import Settings

log = logging.getLogger("services.socket_gateway")


def serve(app: Any, settings: Settings, stop: Callable[[], None]) -> None:
    """Serve ``app`` under eventlet until signalled, then stop what ``runtime.start`` started."""
    import eventlet
    import eventlet.wsgi

    try:
        try:
            implementation = wsfast.install()
        except wsfast.FastUnmaskUnavailable as exc:
            # Without it every 1 MiB chunk costs ~0.4 s of the one hub's CPU; refuse rather than crawl.
            print(f"socket_gateway: {exc}", file=sys.stderr)
            sys.exit(3)
        log.info("websocket unmasking", extra={"implementation": implementation, "fast": wsfast.is_active()})
        wsfast.install_message_cap(settings.max_text_message_bytes, settings.assembly_budget_bytes)
        log.info("listening", extra={"host": settings.host, "port": settings.port,
                                     "max_connections": settings.max_connections})
        # keepalive (seconds) bounds the wait for a request line, socket_timeout every other read
        # and write: an idle or slow connection is dropped instead of holding a green thread.
        eventlet.wsgi.server(eventlet.listen((settings.host, settings.port)), app,
                             max_size=settings.max_connections, log=None, log_output=False,
                             keepalive=settings.header_timeout, socket_timeout=settings.socket_timeout)
    finally:
        stop()
