"""``python -m services.socket_gateway``: the Socket.IO gateway under eventlet, its consumers beside it."""

# eventlet must patch the standard library before anything imports socket, ssl, threading
# or time (requests, redis, pika, python-socketio all do): keep these two lines first.
import eventlet  # noqa: I001

eventlet.monkey_patch()

from services.common import logs, runtime  # noqa: E402
from services.common.settings import load_or_exit  # noqa: E402

from . import server  # noqa: E402
from .app import create_app  # noqa: E402
from .config import Settings  # noqa: E402

SERVICE = "socket_gateway"


def main() -> None:
    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    stop = runtime.start(app, settings.common.amqp_url, sigterm=False)  # server.serve's own
    server.serve(app, settings, stop)


if __name__ == "__main__":
    main()
