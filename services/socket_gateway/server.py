"""How the gateway serves: eventlet's WSGI server (the other services run waitress).

``__main__`` has monkey-patched the standard library before anything else was imported.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import Any

from . import wsfast
from .config import Settings

log = logging.getLogger("services.socket_gateway")

# The collector's thresholds (CPython's defaults: 700, 10, 10). With thousands of sockets the
# gateway holds ~170 objects per socket (greenlets, frames, timers re-armed by every ping), and
# at 700 allocations per young collection the timers live long enough to be promoted: the old
# generation grew 25 % every 15-20 s, and each full collection of ~850,000 objects stopped the
# one hub for 0.7-1.9 s (measured, 5,000 sockets, README "Issue 11"): a broadcast waited behind
# it. A young generation of 50,000 (a collection of it takes a few ms) lets those short-lived
# objects die before they are looked at; full collections still run, rarer.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Fewer, cheaper collections: the startup objects (modules, classes, ~1/4 of the heap of a
    busy gateway) are moved out of the collector's sight, the young generation made larger."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        tune_gc()
        log.info("listening", extra={"host": settings.host, "port": settings.port,
                                     "max_connections": settings.max_connections})
        # keepalive (seconds) bounds the wait for a request line, socket_timeout every other read
        # and write: an idle or slow connection is dropped instead of holding a green thread.
        eventlet.wsgi.server(eventlet.listen((settings.host, settings.port)), app,
                             max_size=settings.max_connections, log=None, log_output=False,
                             keepalive=settings.header_timeout, socket_timeout=settings.socket_timeout)
    finally:
        stop()
