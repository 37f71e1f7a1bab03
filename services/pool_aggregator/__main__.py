"""``python -m services.pool_aggregator``: HTTP under waitress, the FileStored/UploadStored consumers, the ticker."""

from __future__ import annotations

from services.common import logs, runtime
from services.common.settings import load_or_exit

from .app import SERVICE, create_app
from .config import Settings


def main() -> None:
    settings = load_or_exit(SERVICE, Settings.from_env)
    logs.configure_service(SERVICE, settings.common)
    app = create_app(settings)
    stop = runtime.start(app, settings.common.amqp_url)
    runtime.serve(app, settings.host, settings.port, stop, threads=settings.threads,
                  max_body=settings.max_result_bytes)


if __name__ == "__main__":
    main()
