"""How the gateway serves: eventlet's WSGI server (the other services run waitress).

``__main__`` has monkey-patched the standard library before anything else was imported.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
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


# SIGTERM (a rolling update, a scale-down) must publish the audit trail's buffer (the
# ``result_delivered`` records of the last ~50 ms) before the process goes. Not by raising from
# the signal handler: under eventlet the handler runs in whichever green thread is current, and
# eventlet's server waits for every open socket on its way out. The handler only sets a flag; a
# green thread that looks every SIGTERM_POLL_SECONDS runs ``stop`` (bounded by
# STOP_SECONDS: consumers, then the trail) and ends the process; clients reconnect elsewhere.
SIGTERM_POLL_SECONDS = 0.2
STOP_SECONDS = 10.0


class Signalled:
    """A bare flag: the signal handler may interrupt any code, so it takes no lock (a green
    ``threading.Event`` would)."""

    def __init__(self) -> None:
        self.raised = False

    def set(self) -> None:
        self.raised = True


def stop_on_sigterm(stop: Callable[[], None], exit: Callable[[int], None] = os._exit) -> Signalled:
    """Install the gateway's SIGTERM handler; returns the flag it sets (tests set it directly)."""
    import eventlet

    signalled = Signalled()

    def watch() -> None:
        while not signalled.raised:
            eventlet.sleep(SIGTERM_POLL_SECONDS)
        log.info("stopping", extra={"signal": "SIGTERM"})
        try:
            with eventlet.Timeout(STOP_SECONDS, False):
                stop()
        finally:
            exit(0)

    eventlet.spawn_n(watch)
    with contextlib.suppress(ValueError):  # outside the main thread (a test): no handler, the flag only
        signal.signal(signal.SIGTERM, lambda signum, frame: signalled.set())
    return signalled


def serve(app: Any, settings: Settings, stop: Callable[[], None]) -> None:
    """Serve ``app`` under eventlet until signalled, then stop what ``runtime.start`` started."""
    import eventlet
    import eventlet.wsgi

    try:
        stop_on_sigterm(stop)
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
