"""How every service runs beside its web server: prepare, consume, repeat, serve, stop.

``create_app`` only wires; it describes what else the process must run in one
``Runtime`` (kept in ``app.extensions["runtime"]``): a ``prepare`` step
(migrations, indexes; retried while a dependency is still starting), the
consumers of ``handlers.CONSUMERS`` built from the app's deps, and periodic
passes (sweepers, tickers). Every ``__main__`` is then the same five lines::

    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    stop = runtime.start(app, settings.common.amqp_url)
    runtime.serve(app, settings.host, settings.port, stop, threads=settings.threads)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .audit import AuditTrail
from .handlers import ConsumerSpec
from .periodic import start_periodic

log = logging.getLogger(__name__)

# In compose or Kubernetes a database may come up after us: prepare is retried this long.
PREPARE_WAIT_SECONDS = 60.0
PREPARE_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Periodic:
    """A pass run every ``interval`` seconds in its own thread (0 turns it off)."""

    name: str
    interval: float
    work: Callable[[], object]


@dataclass(frozen=True)
class Runtime:
    prepare: Callable[[], object] | None = None
    consumers: Sequence[ConsumerSpec] = ()
    periodic: Sequence[Periodic] = ()
    # Started after prepare; each returns a stop function (the pool ticker, for one).
    services: Sequence[Callable[[], Callable[[], None]]] = field(default_factory=tuple)
    # The service's audit trail: started before the consumers, so their records are batched
    # too, and stopped last, after everything that records (its stop publishes the buffer).
    audit: AuditTrail | None = None


def runtime_of(app: Any) -> Runtime:
    runtime = app.extensions.get("runtime") if hasattr(app, "extensions") else None
    return runtime if isinstance(runtime, Runtime) else Runtime()


def prepare(step: Callable[[], object], *, wait: float = PREPARE_WAIT_SECONDS,
            pause: float = PREPARE_RETRY_SECONDS) -> None:
    """Run ``step`` until it succeeds or ``wait`` seconds passed (then its error ends the process)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            step()
            return
        except Exception as exc:  # noqa: BLE001 - any dependency error is "not up yet" until the deadline
            if time.monotonic() > deadline:
                raise
            log.warning("dependency not ready; retrying", extra={"error": repr(exc)})
            time.sleep(pause)


def start(app: Any, amqp_url: str, *, sigterm: bool = True) -> Callable[[], None]:
    """Prepare, then start the app's consumers, periodic passes and services; returns ``stop``.

    ``stop`` may be called more than once (``serve``'s ``finally``, the ``atexit`` hook, a
    signal): only the first call stops. With ``sigterm`` (every waitress service), SIGTERM turns
    into ``SystemExit`` from here on, so a SIGTERM that arrives between ``start`` and ``serve``
    (or in the middle of ``start``) still unwinds through ``stop`` and publishes the audit
    buffer instead of killing the process with it. socket_gateway passes False: under eventlet
    an exception raised by a signal lands in whichever green thread runs, so its server installs
    its own handler (``socket_gateway.server``)."""
    from . import messaging  # pika is imported by messaging only, and only when a process starts

    if sigterm:
        exit_on_sigterm()
    runtime = runtime_of(app)
    if runtime.prepare is not None:
        prepare(runtime.prepare)
    metrics = app.extensions.get("metrics") if hasattr(app, "extensions") else None
    on_dead_letter = None
    if metrics is not None and runtime.consumers:
        dead_lettered = metrics.counter(
            "messages_dead_lettered_total", "Messages a consumer set aside to dropbox.dead_letters "
            "(poison: failed MAX_DELIVERIES times; unknown: no contract; unhandled: no handler)",
            ("queue", "reason"))

        def on_dead_letter(queue: str, reason: str) -> None:
            dead_lettered.labels(queue, reason).inc()

    stop_event = threading.Event()
    stoppers: list[Callable[[], None]] = []
    consumers: list[Any] = []
    stop_audit = runtime.audit.start() if runtime.audit is not None else None
    stopping = threading.Lock()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        with stopping:
            if stopped:
                return
            stopped = True
        if sigterm:
            # A second SIGTERM (an impatient supervisor) must not cut this stop short with a
            # SystemExit in the middle of the trail's flush: the process is stopping already.
            with contextlib.suppress(ValueError):  # main thread only
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_event.set()
        for stopper in stoppers:
            stopper()
        messaging.stop_consumers(consumers)
        if stop_audit is not None:
            # Last: the records of everything above are in the buffer. A handler still running
            # (stop_consumers only asks) records after this in place, not into a dead buffer.
            stop_audit()

    # A SystemExit anywhere later (a SIGTERM before serve, a fatal error in __main__) still
    # flushes: the interpreter runs atexit hooks on the way out.
    atexit.register(stop)
    try:
        consumers.extend(messaging.start_consumers(amqp_url, runtime.consumers, on_dead_letter))
        for task in runtime.periodic:
            start_periodic(task.name, task.interval, task.work, stop_event)
        stoppers.extend(begin() for begin in runtime.services)
    except BaseException:
        stop()  # what did start: the audit thread with its records, consumers, passes
        raise
    return stop


def exit_on_sigterm() -> None:
    """SIGTERM (``docker stop``, Kubernetes, ``devtools.fleet``) ends ``serve`` as Ctrl-C does, so
    its ``stop`` runs: the audit trail's buffer is published instead of dying with the process.
    Not for socket_gateway (see ``start``)."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    with contextlib.suppress(ValueError):  # signal.signal works in the main thread only (not in a test's)
        signal.signal(signal.SIGTERM, handler)


def serve(app: Any, host: str, port: int, stop: Callable[[], None], **options: Any) -> None:
    """Serve HTTP under waitress until signalled (SIGINT or SIGTERM), then stop what ``start`` started."""
    from .httpkit import serve as serve_http

    exit_on_sigterm()  # already, by start; again for an app started without it
    try:
        serve_http(app, host, port, **options)
    finally:
        stop()
