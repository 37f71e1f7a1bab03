from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from services.common import messaging
from services.common.authclient import Identity
from services.common.runtime import runtime_of
from services.file_service_manager.app import create_app as create_fsm
from services.file_service_manager.config import Settings as FsmSettings
from services.file_service_manager.store import FileIndex, UploadCache
from services.file_uploader.app import create_app as create_uploader
from tests.integration.file_uploader.helpers import StaticAuth, common_env, uploader_settings

CHUNK = 1024 * 1024

AUTH = StaticAuth(
    tokens={
        "alice": Identity("u1", "alice", "user", {"p1": "contributor"}),
        "bob": Identity("u2", "bob", "user", {}),
        "carol": Identity("u3", "carol", "user", {"p1": "listener"}),
        "root": Identity("u0", "admin", "admin", {}),
    },
    keys={"key-p1": "p1", "key-p2": "p2"},
)


class Handlers:
    """file_service_manager's consumer tables, called directly (as its consumers would)."""

    def __init__(self, app: Any) -> None:
        specs = {spec.name: spec for spec in runtime_of(app).consumers}
        self.handle_store = specs["store"].dispatch
        self.handle_prestore = specs["prestore"].dispatch
        self.handle_index = specs["index"].dispatch
        self.handle_audit = specs["audit"].dispatch


@dataclass
class Pipeline:
    uploader: Any  # Flask test client of file_uploader
    upload_service: Any
    fsm: Any  # Flask test client of file_service_manager
    worker: Handlers
    index: FileIndex
    redis: redis.Redis
    prefix: str
    amqp_url: str


@pytest.fixture
def make_pipeline(amqp_url: str, redis_prefix: str, mongo_db) -> Iterator[Any]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    brokers: list[messaging.Broker] = []

    def build(fail_pattern: str | None = None, fsm_env: dict[str, str] | None = None,
              **uploader_env: str) -> Pipeline:
        up_broker, fsm_broker = messaging.Broker(amqp_url), messaging.Broker(amqp_url)
        brokers.extend([up_broker, fsm_broker])
        up_app = create_uploader(uploader_settings(amqp_url, redis_prefix, **uploader_env), broker=up_broker,
                                 auth=AUTH)
        env = common_env(amqp_url, redis_prefix, **(fsm_env or {}))
        if fail_pattern:
            env["STORE_FAIL_PATTERN"] = fail_pattern
        index = FileIndex(mongo_db)
        fsm_app = create_fsm(FsmSettings.from_env(env), index=index, cache=UploadCache(client),
                             broker=fsm_broker, auth=AUTH)
        return Pipeline(up_app.test_client(), up_app.extensions["deps"].uploads, fsm_app.test_client(),
                        Handlers(fsm_app), index, client, redis_prefix, amqp_url)

    yield build
    for broker in brokers:
        broker.close()
    client.close()
