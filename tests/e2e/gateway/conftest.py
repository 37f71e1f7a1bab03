"""A fleet of this module's own for the gateway's end-to-end tests: the same launcher and
isolation as tests/e2e/conftest.py, with small chunks (multi-chunk uploads from small
files), a fast aggregator tick and short pings (a dropped client is noticed quickly)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from client import DropboxClient
from devtools.fleet import Fleet

from ..conftest import ADMIN, ROOT, fleet_env, start_fleet, teardown_env

CHUNK_SIZE = 256 * 1024


@dataclass
class GatewayFleet:
    running: Fleet

    @property
    def urls(self) -> dict[str, str]:
        return self.running.urls

    @property
    def gateway(self) -> str:
        return self.urls["socket_gateway"]

    def client(self, **kwargs) -> DropboxClient:
        return DropboxClient(self.gateway, timeout=kwargs.pop("timeout", 15.0), **kwargs)

    def user(self, prefix: str = "u") -> tuple[DropboxClient, str]:
        c = self.client()
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        c.signup(name, "password-123")
        return c, name

    def admin(self) -> DropboxClient:
        c = self.client()
        c.login(*ADMIN)
        return c

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.running.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture(scope="module")
def fleet(mongo_uri: str) -> Iterator[GatewayFleet]:
    env = fleet_env(mongo_uri, LOG_LEVEL="WARNING", CHUNK_SIZE=str(CHUNK_SIZE), MAX_CHUNK_BYTES=str(1024 * 1024),
                    TICK_SECONDS="0.2", POOL_CACHE_SECONDS="0", GATEWAY_PING_INTERVAL="2",
                    GATEWAY_PING_TIMEOUT="3")
    running = start_fleet(env, ROOT / "artifacts" / "fleet-logs" / f"gateway-{uuid.uuid4().hex[:6]}")
    try:
        yield GatewayFleet(running)
    finally:
        running.stop()
        teardown_env(env)
