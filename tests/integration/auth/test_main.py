"""``python -m services.auth`` as a process: production refuses default secrets; a real start serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

from devtools import infra

ROOT = Path(__file__).resolve().parents[3]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JWT_SECRET", "INTERNAL_API_KEY", "ADMIN_PASSWORD", "ADMIN_USER", "DROPBOX_ENV")}
    env.update({"LOG_LEVEL": "INFO", **extra})  # INFO: every log call on the start path runs
    return env


def _declared_body_answer(port: int, length: int) -> bytes:
    """Send only the headers of a POST announcing ``length`` bytes; what auth answers within 10 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"POST /auth/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        try:
            return conn.recv(4096)
        except TimeoutError:
            return b"(no answer: waiting for the body)"


def test_production_refuses_default_secrets() -> None:
    good = {"DROPBOX_ENV": "production", "JWT_SECRET": "p" * 40, "INTERNAL_API_KEY": "prod-internal-key",
            "ADMIN_PASSWORD": "prod-admin-password",
            # an unreachable database: the process must stop on the secrets before trying it
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    for missing in ("ADMIN_PASSWORD", "JWT_SECRET", "INTERNAL_API_KEY"):
        env = _env(**{k: v for k, v in good.items() if k != missing})
        proc = subprocess.run([sys.executable, "-m", "services.auth"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (missing, proc.stderr)
        assert missing in proc.stderr
    env = _env(**{**good, "ADMIN_PASSWORD": "admin-password"})
    proc = subprocess.run([sys.executable, "-m", "services.auth"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "ADMIN_PASSWORD" in proc.stderr


def test_process_migrates_bootstraps_and_serves(pg_url: str, amqp_url: str) -> None:
    port = infra.free_port()
    env = _env(DATABASE_URL=pg_url, AMQP_URL=amqp_url, AUTH_PORT=str(port), ADMIN_USER="boss",
               ADMIN_PASSWORD="boss-password-1", ACCESS_TOKEN_TTL_SECONDS="600")
    proc = subprocess.Popen([sys.executable, "-m", "services.auth"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        infra.wait_port("127.0.0.1", port, 30, "auth")
        base = f"http://127.0.0.1:{port}"
        login = requests.put(f"{base}/auth/login/boss", json={"password": "boss-password-1"}, timeout=10)
        assert login.status_code == 200 and login.json()["role"] == "admin"
        token = login.json()["access_token"]
        doc = requests.get(f"{base}/auth/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert doc.status_code == 200 and doc.json()["user_name"] == "boss"
        signup = requests.post(f"{base}/auth/signup", json={"user_name": "zed", "password": "zed-password"},
                               timeout=10)
        assert signup.status_code == 201
        assert requests.get(f"{base}/ready", timeout=10).json()["checks"] == {"postgres": True,
                                                                             "rabbitmq": True}
        # A body above 64 KiB: SPEC's JSON 413 from the app ...
        big = requests.post(f"{base}/auth/signup", data=b"{" + b" " * (100 * 1024) + b"}", timeout=10,
                            headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        # ... and a huge declared body is refused on its headers: auth never waits for (or buffers) it.
        assert _declared_body_answer(port, 32 * 1024 * 1024).startswith(b"HTTP/1.1 413")
    finally:
        infra.stop_process(proc)
    assert proc.returncode is not None


def test_production_refuses_a_stored_admin_that_still_has_the_default_password(pg_url: str, amqp_url: str) -> None:
    from argon2 import PasswordHasher

    from services.auth import core
    from services.auth.app import bootstrap_admin
    from services.auth.store import Store

    store = Store(pg_url, pool_size=2)
    store.migrate()  # a database first started in development: its admin has "admin-password"
    fast = core.Passwords(PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1), slots=1)
    bootstrap_admin(store, fast, "admin", "admin-password")
    store.close()
    env = _env(DROPBOX_ENV="production", JWT_SECRET="p" * 40, INTERNAL_API_KEY="prod-internal-key",
               ADMIN_PASSWORD="prod-admin-password", DATABASE_URL=pg_url, AMQP_URL=amqp_url,
               AUTH_PORT=str(infra.free_port()))
    proc = subprocess.run([sys.executable, "-m", "services.auth"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "auth: configuration error:" in proc.stderr and "default password" in proc.stderr
