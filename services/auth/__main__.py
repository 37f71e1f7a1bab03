"""``python -m services.auth``: migrate, make sure the admin exists, serve under waitress."""

from __future__ import annotations

from services.common import logs, runtime
from services.common.settings import load_or_exit

from . import core
from .app import create_app
from .config import Settings

SERVICE = "auth"


def main() -> None:
    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    stop = runtime.start(app, settings.common.amqp_url)
    # Every auth request is a small JSON object: waitress refuses a larger declared body at its
    # headers with SPEC's JSON 413 (httpkit.make_server), before buffering a byte of it.
    runtime.serve(app, settings.host, settings.port, stop, threads=settings.threads, max_body=core.MAX_BODY)


if __name__ == "__main__":
    main()
