"""``python -m services.auth``: migrate, make sure the admin exists, serve under waitress."""

from __future__ import annotations

from services.common import logs, runtime
from services.common.settings import load_or_exit

from .app import WAITRESS_MAX_BODY, create_app
from .config import Settings

SERVICE = "auth"


def main() -> None:
    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    stop = runtime.start(app, settings.common.amqp_url)
    runtime.serve(app, settings.host, settings.port, stop, threads=settings.threads, max_body=WAITRESS_MAX_BODY)


if __name__ == "__main__":
    main()
