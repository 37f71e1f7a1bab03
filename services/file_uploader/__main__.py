"""Start file_uploader: HTTP under waitress, the store-failure consumer, the sweeper."""

from __future__ import annotations

import threading

from services.common import httpkit, logs, messaging
from services.common.settings import load_or_exit

from . import sweep
from .app import create_app
from .config import Settings
from .worker import store_failed_handler


def main() -> None:
    settings = load_or_exit("file_uploader", Settings.from_env)
    logs.configure_service("file_uploader", settings.common)
    app = create_app(settings)
    service = app.extensions["upload_service"]
    consumer = messaging.Consumer(settings.common.amqp_url, messaging.STORE_FAILED_QUEUE,
                                  store_failed_handler(service), prefetch=4, name="store_failed")
    consumer.start()
    stop = threading.Event()
    sweep.start_background(service.store, interval=settings.sweep_interval_seconds,
                           upload_ttl=settings.upload_ttl_seconds, stop=stop)
    try:
        httpkit.serve(app, settings.host, settings.port, threads=settings.threads,
                      max_body=settings.limits.max_file_size + 1024 * 1024)
    finally:
        stop.set()
        consumer.stop()


if __name__ == "__main__":
    main()
