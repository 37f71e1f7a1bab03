"""Start file_service_manager: HTTP under waitress and the store/index/audit consumers."""

from __future__ import annotations

import threading

from services.common import httpkit, logs, messaging
from services.common.settings import load_or_exit

from . import sweep
from .app import create_app
from .config import Settings


def main() -> None:
    settings = load_or_exit("file_service_manager", Settings.from_env)
    logs.configure_service("file_service_manager", settings.common)
    app = create_app(settings)
    worker = app.extensions["fsm_worker"]
    url = settings.common.amqp_url
    consumers = [
        messaging.Consumer(url, messaging.STORE_QUEUE, worker.handle_store, prefetch=settings.store_prefetch,
                           name=f"store-{n}")
        for n in range(settings.store_consumers)
    ] + [
        messaging.Consumer(url, messaging.INDEX_QUEUE, worker.handle_index, prefetch=16, name="index"),
        messaging.Consumer(url, messaging.AUDIT_QUEUE, worker.handle_audit, prefetch=32, name="audit"),
    ]
    for consumer in consumers:
        consumer.start()
    stop = threading.Event()
    sweep.start_background(worker.index, interval=settings.sweep_interval_seconds,
                           grace_seconds=settings.sweep_grace_seconds, audit=worker.audit, stop=stop)
    try:
        httpkit.serve(app, settings.host, settings.port, threads=settings.threads)
    finally:
        stop.set()
        for consumer in consumers:
            consumer.stop()


if __name__ == "__main__":
    main()
