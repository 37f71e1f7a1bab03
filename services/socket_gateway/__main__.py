"""``python -m services.socket_gateway``: the Socket.IO gateway under eventlet."""

# eventlet must patch the standard library before anything imports socket, ssl, threading
# or time (requests, redis, pika, python-socketio all do): keep these two lines first.
import eventlet  # noqa: I001

eventlet.monkey_patch()

import logging  # noqa: E402
import sys  # noqa: E402

import eventlet.wsgi  # noqa: E402

from services.common import logs  # noqa: E402
from services.common.settings import load_or_exit  # noqa: E402

from . import wsfast  # noqa: E402
from .app import create_app  # noqa: E402
from .config import Settings  # noqa: E402

log = logging.getLogger("services.socket_gateway")


def main() -> None:
    settings = load_or_exit("socket_gateway", Settings.from_env)
    logs.configure_service("socket_gateway", settings.common)
    try:
        implementation = wsfast.install()
    except wsfast.FastUnmaskUnavailable as exc:
        # Without it every 1 MiB chunk costs ~0.4 s of the one hub's CPU; refuse rather than crawl.
        print(f"socket_gateway: {exc}", file=sys.stderr)
        sys.exit(3)
    log.info("websocket unmasking", extra={"implementation": implementation, "fast": wsfast.is_active()})
    app = create_app(settings)
    app.start_workers()
    log.info("listening", extra={"host": settings.host, "port": settings.port,
                                 "max_connections": settings.max_connections})
    eventlet.wsgi.server(eventlet.listen((settings.host, settings.port)), app,
                         max_size=settings.max_connections, log=None, log_output=False)


if __name__ == "__main__":
    main()
