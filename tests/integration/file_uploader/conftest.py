from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from services.common import messaging
from services.file_uploader.app import create_app

from .helpers import StaticAuth, uploader_settings


@pytest.fixture
def rclient() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    client.close()


@pytest.fixture
def make_uploader(amqp_url: str, redis_prefix: str) -> Iterator[Any]:
    brokers = []

    def build(auth: StaticAuth | None = None, **env: str):
        settings = uploader_settings(amqp_url, redis_prefix, **env)
        broker = messaging.Broker(amqp_url)
        brokers.append(broker)
        app = create_app(settings, broker=broker, auth=auth or StaticAuth())
        return app, app.test_client(), app.extensions["deps"].uploads

    yield build
    for broker in brokers:
        broker.close()
