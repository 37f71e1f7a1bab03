"""The running fleet for end-to-end tests: all five services as processes,
on free ports, with a PostgreSQL database, RabbitMQ vhost, Redis prefix and
MongoDB database of their own. Tests talk to it only over HTTP and Socket.IO.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools import infra
from devtools.fleet import SERVICES, Fleet

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("admin", "admin-password-e2e")


@dataclass
class RunningFleet:
    fleet: Fleet
    admin: tuple[str, str]
    env: dict[str, str]

    @property
    def urls(self) -> dict[str, str]:
        return self.fleet.urls

    @property
    def gateway(self) -> str:
        return self.urls["socket_gateway"]


def fleet_env(mongo_uri: str, **extra: str) -> dict[str, str]:
    infra.ensure_all()
    return {
        "DROPBOX_ENV": "development",
        "DATABASE_URL": infra.create_postgres_db("dropbox_e2e"),
        "AMQP_URL": infra.create_vhost("dropbox_e2e"),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "REDIS_PREFIX": f"e2e:{uuid.uuid4().hex[:10]}",
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"e2e_{uuid.uuid4().hex[:10]}",
        "ADMIN_USER": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "LOG_LEVEL": "INFO",
        "STORE_RETRY_DELAY_SECONDS": "0.5",
        # Test-only: uploads named like this fail to store (the retry path); refused in production.
        "STORE_FAIL_PATTERN": r"^fail-store-.*",
        # Every test client signs up and logs in from 127.0.0.1: per-address limits would make the
        # suite's own traffic a flood. Per-name limits stay on; tests of the address limits set them.
        "SIGNUP_IP_RATE_PER_MINUTE": "0",
        "LOGIN_IP_RATE_PER_MINUTE": "0",
        **extra,
    }


def teardown_env(env: dict[str, str]) -> None:
    infra.drop_postgres_db(env["DATABASE_URL"])
    infra.delete_vhost(env["AMQP_URL"])


def start_fleet(env: dict[str, str], log_dir: Path) -> Fleet:
    ports = {name: infra.free_port() for name in SERVICES}
    fleet = Fleet(env, ports=ports, log_dir=log_dir)
    try:
        fleet.start(timeout=120)
    except Exception:
        fleet.stop()
        raise
    return fleet


@pytest.fixture(scope="session")
def fleet(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    env = fleet_env(mongo_uri)
    log_dir = ROOT / "artifacts" / "fleet-logs" / f"session-{uuid.uuid4().hex[:6]}"
    running = start_fleet(env, log_dir)
    try:
        yield RunningFleet(running, ADMIN, running.env)
    finally:
        running.stop()
        teardown_env(env)


@pytest.fixture
def make_fleet(mongo_uri: str) -> Iterator:
    """A fleet of the test's own (for tests that kill, restart or reconfigure services):
    ``make_fleet(**env_overrides)``; stopped and cleaned up after the test."""
    made: list[tuple[Fleet, dict[str, str]]] = []

    def build(**overrides: str) -> RunningFleet:
        env = fleet_env(mongo_uri, **overrides)
        running = start_fleet(env, ROOT / "artifacts" / "fleet-logs" / f"private-{uuid.uuid4().hex[:6]}")
        made.append((running, env))
        return RunningFleet(running, ADMIN, running.env)

    yield build
    for running, env in made:
        running.stop()
        teardown_env(env)
