"""A real fleet for the gateway's tests: auth, file_uploader, file_service_manager,
pool_aggregator and the gateway itself, each ``python -m services.<name>`` in a process of
its own, on free ports, with a database, vhost, Redis prefix and MongoDB database of this
module's own. Started once per module (a start costs seconds), stopped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from client import DropboxClient
from devtools import infra

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("auth", "file_uploader", "file_service_manager", "pool_aggregator", "socket_gateway")
ADMIN = ("admin", "admin-password-it")
CHUNK_SIZE = 256 * 1024  # small chunks: multi-chunk uploads with small files


@dataclass
class Fleet:
    env: dict[str, str]
    urls: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

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
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self, name: str) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT,
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if requests.get(f"{self.urls[name]}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy within {timeout}s:\n{self.log_tail(name)}")

    def wait_ready(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.urls[name]}/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready within {timeout}s:\n{self.log_tail(name)}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def fleet(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    infra.ensure_all()
    pg_url = infra.create_postgres_db()
    amqp_url = infra.create_vhost()
    prefix = f"test:{uuid.uuid4().hex[:12]}"
    mongo_db = f"test_{uuid.uuid4().hex[:12]}"
    ports = {name: infra.free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {k: v for k, v in os.environ.items()
           if k not in ("JWT_SECRET", "INTERNAL_API_KEY", "ADMIN_PASSWORD", "ADMIN_USER", "DROPBOX_ENV")}
    env.update({
        "DROPBOX_ENV": "development", "LOG_LEVEL": "WARNING",
        "DATABASE_URL": pg_url, "AMQP_URL": amqp_url, "REDIS_URL": "redis://127.0.0.1:6379/0",
        "REDIS_PREFIX": prefix, "MONGODB_URI": mongo_uri, "MONGODB_DB": mongo_db,
        "ADMIN_USER": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
        "AUTH_URL": urls["auth"], "FILE_UPLOADER_URL": urls["file_uploader"],
        "FILE_SERVICE_MANAGER_URL": urls["file_service_manager"],
        "POOL_AGGREGATOR_URL": urls["pool_aggregator"], "PUBLIC_FILE_URL": urls["file_service_manager"],
        "CHUNK_SIZE": str(CHUNK_SIZE), "MAX_CHUNK_BYTES": str(1024 * 1024),
        "TICK_SECONDS": "0.2", "POOL_CACHE_SECONDS": "0",
        # short pings: a dropped client is noticed quickly (and the redelivery margin is small)
        "GATEWAY_PING_INTERVAL": "2", "GATEWAY_PING_TIMEOUT": "3", "GATEWAY_DELIVERY_SLACK": "2",
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
    })
    fleet = Fleet(env=env, urls=urls, logs=tmp_path_factory.mktemp("fleet-logs"))
    try:
        # auth first: it migrates and creates the admin the others may ask about
        fleet.start("auth")
        fleet.wait_healthy("auth")
        for name in SERVICES[1:]:
            fleet.start(name)
        for name in SERVICES[1:]:
            fleet.wait_healthy(name)
        fleet.wait_ready("socket_gateway")  # its consumers are bound: notifications have a queue
        yield fleet
    finally:
        for name in reversed(SERVICES):
            fleet.stop(name)
        infra.delete_vhost(amqp_url)
        infra.drop_postgres_db(pg_url)
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in r.scan_iter(f"{prefix}:*", count=1000):
            r.delete(key)
        r.close()
        try:
            import pymongo

            pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=2000).drop_database(mongo_db)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
