"""python -m services.pool_aggregator: HTTP (waitress) + FileStored consumer + ticker."""

from __future__ import annotations

import logging
import time

from services.common import httpkit, logs
from services.common.messaging import AGGREGATOR_QUEUE, Consumer
from services.common.settings import load_or_exit

from .app import SERVICE, create_app
from .config import Settings

log = logging.getLogger(__name__)


def main() -> None:
    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    parts = app.extensions[SERVICE]
    for attempt in range(30):  # MongoDB may still be starting (docker-compose, k8s)
        try:
            parts.store.ensure_indexes()
            break
        except Exception as exc:  # noqa: BLE001
            log.warning("mongodb_not_ready", extra={"error": repr(exc), "attempt": attempt})
            time.sleep(1)
    Consumer(settings.common.amqp_url, AGGREGATOR_QUEUE, parts.handler, prefetch=8, name=SERVICE).start()
    parts.ticker.start()
    httpkit.serve(app, settings.host, settings.port, threads=settings.threads, max_body=settings.max_result_bytes)


if __name__ == "__main__":
    main()
