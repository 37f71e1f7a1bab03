"""An auth app on a fresh PostgreSQL database and RabbitMQ vhost, driven by Flask's test client."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from argon2 import PasswordHasher

from services.auth import core
from services.auth.app import bootstrap_admin, create_app
from services.auth.config import Settings
from services.auth.store import Store
from services.common.contracts import Message
from services.common.messaging import CONTROL_BINDINGS, Broker, Consumer
from services.common.testing.auth import FakeStorageProbe

# Real argon2id with small costs: each test hashes a handful of passwords.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
STORAGE_KEY = "SW50ZWdyYXRpb24gdGVzdHMgc2hhcmUgdGhpcyBrZXk="  # Fernet: 32 bytes, url-safe base64


@dataclass
class AuthEnv:
    client: object
    app: object
    store: Store
    broker: Broker
    settings: Settings
    passwords: core.Passwords
    probe: FakeStorageProbe

    def signup(self, user_name: str, password: str = "password-123") -> dict:
        response = self.client.post("/auth/signup", json={"user_name": user_name, "password": password})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def login(self, user_name: str, password: str) -> dict:
        response = self.client.put(f"/auth/login/{user_name}", json={"password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def admin_token(self) -> str:
        return self.login(self.settings.admin_user, self.settings.admin_password)["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(pg_url: str, amqp_url: str, **extra: str) -> Settings:
    env = {"DATABASE_URL": pg_url, "AMQP_URL": amqp_url, "ADMIN_USER": "admin",
           "ADMIN_PASSWORD": "admin-password", "JWT_SECRET": "integration-jwt-secret-0123456789abcdef",
           "INTERNAL_API_KEY": "integration-internal-key", "STORAGE_SECRETS_KEY": STORAGE_KEY, **extra}
    return Settings.from_env(env)


@pytest.fixture
def auth_env(pg_url: str, amqp_url: str, redis_prefix: str,
             caplog: pytest.LogCaptureFixture) -> Iterator[AuthEnv]:
    caplog.set_level(logging.INFO)  # every log call runs (a bad ``extra`` key raises only when it does)
    settings = make_settings(pg_url, amqp_url, REDIS_PREFIX=redis_prefix)
    store = Store(settings.database_url, pool_size=8)
    store.migrate()
    passwords = core.Passwords(FAST_HASHER, slots=2)
    bootstrap_admin(store, passwords, settings.admin_user, settings.admin_password)
    broker = Broker(settings.common.amqp_url, publish_attempts=2)
    probe = FakeStorageProbe()  # file_service_manager's probe has tests of its own
    app = create_app(settings, store=store, broker=broker, passwords=passwords, storage_probe=probe)
    yield AuthEnv(app.test_client(), app, store, broker, settings, passwords, probe)
    broker.close()
    store.close()


class Inbox:
    """A private queue bound to auth's control events in the test's vhost."""

    def __init__(self, amqp_url: str) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.consumer = Consumer(amqp_url, None, self.messages.put, bindings=CONTROL_BINDINGS,
                                 name="test-inbox")

    def start(self) -> None:
        self.consumer.start()
        deadline = time.monotonic() + 10
        while not self.consumer.connected:
            assert time.monotonic() < deadline, "consumer did not connect"
            time.sleep(0.05)
        time.sleep(0.2)  # connected is set just before basic_consume takes effect

    def next(self, timeout: float = 10) -> Message:
        return self.messages.get(timeout=timeout)

    def stop(self) -> None:
        self.consumer.stop()


@pytest.fixture
def inbox(amqp_url: str) -> Iterator[Inbox]:
    box = Inbox(amqp_url)
    box.start()
    yield box
    box.stop()
