"""``python -m services.auth``: migrate, make sure the admin exists, serve."""

from __future__ import annotations

import logging
import time

import psycopg2

from services.common import httpkit, logs
from services.common.settings import load_or_exit

from . import core
from .app import bootstrap_admin, create_app
from .config import Settings
from .store import Store

log = logging.getLogger("services.auth")

DB_WAIT_SECONDS = 60  # in compose/Kubernetes PostgreSQL may come up after us


def main() -> None:
    settings = load_or_exit("auth", Settings.from_env)
    logs.configure_service("auth", settings.common)
    store = Store(settings.database_url, pool_size=settings.db_pool_size)
    deadline = time.monotonic() + DB_WAIT_SECONDS
    while True:
        try:
            applied = store.migrate()
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("PostgreSQL not reachable yet; retrying", extra={"error": str(exc)})
            time.sleep(2)
    log.info("migrations done", extra={"applied": applied})
    passwords = core.Passwords(slots=settings.hash_slots)
    bootstrap_admin(store, passwords, settings.admin_user, settings.admin_password)
    app = create_app(settings, store=store, passwords=passwords)
    httpkit.serve(app, settings.host, settings.port)


if __name__ == "__main__":
    main()
