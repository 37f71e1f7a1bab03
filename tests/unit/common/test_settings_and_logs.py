from __future__ import annotations

import io
import json
import logging

import pytest

from services.common import logs
from services.common.settings import CommonSettings, ConfigError, env_int, env_secret, listen_address


def test_production_refuses_default_or_missing_secrets():
    for name in ("JWT_SECRET", "INTERNAL_API_KEY", "ADMIN_PASSWORD"):
        with pytest.raises(ConfigError):
            env_secret({"DROPBOX_ENV": "production"}, name)
    from services.common.settings import DEV_SECRETS

    with pytest.raises(ConfigError):
        env_secret({"DROPBOX_ENV": "production", "JWT_SECRET": DEV_SECRETS["JWT_SECRET"]}, "JWT_SECRET")
    with pytest.raises(ConfigError):
        env_secret({"DROPBOX_ENV": "production", "JWT_SECRET": "short"}, "JWT_SECRET")
    assert env_secret({"DROPBOX_ENV": "production", "INTERNAL_API_KEY": "k" * 40}, "INTERNAL_API_KEY") == "k" * 40
    assert env_secret({}, "ADMIN_PASSWORD") == "admin-password"
    with pytest.raises(ConfigError):
        CommonSettings.from_env({"DROPBOX_ENV": "production"})


def test_numbers_and_ports_are_checked():
    assert env_int({"X": "12"}, "X", 3) == 12
    with pytest.raises(ConfigError):
        env_int({"X": "twelve"}, "X", 3)
    with pytest.raises(ConfigError):
        env_int({"X": "0"}, "X", 3, minimum=1)
    assert listen_address({}, "auth") == ("127.0.0.1", 5001)
    assert listen_address({"AUTH_PORT": "6001", "HOST": "0.0.0.0"}, "auth") == ("0.0.0.0", 6001)


def _capture(service: str) -> io.StringIO:
    logs.configure(service, "DEBUG")
    stream = io.StringIO()
    logging.getLogger().handlers[0].stream = stream
    return stream


def test_json_lines_carry_service_context_and_no_secrets():
    stream = _capture("file_uploader")
    log = logging.getLogger("t")
    with logs.bound(request_id="r1", file_id="f1"):
        log.info("stored Bearer abc.def.ghi for eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlMTIz",
                 extra={"pool_id": "p1", "password": "hunter22", "access_token": "t0k3n"})
    log.info("after")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["service"] == "file_uploader" and first["level"] == "info"
    assert first["request_id"] == "r1" and first["file_id"] == "f1" and first["pool_id"] == "p1"
    assert first["password"] == "[redacted]" and first["access_token"] == "[redacted]"
    assert "abc.def.ghi" not in first["message"] and "eyJ" not in first["message"]
    assert "request_id" not in second
    assert first["timestamp"].endswith("Z")


# --- CORS_ORIGINS --------------------------------------------------------------------------

def test_cors_defaults_to_the_gateway_origins_in_development_and_none_in_production() -> None:
    from services.common.settings import cors_origins

    assert cors_origins({}) == ("http://127.0.0.1:5000", "http://localhost:5000")
    assert cors_origins({"SOCKET_GATEWAY_PORT": "6123"}) == ("http://127.0.0.1:6123", "http://localhost:6123")
    assert cors_origins({"DROPBOX_ENV": "production"}) == ()
    assert cors_origins({"CORS_ORIGINS": "https://a.example, https://b.example:8443/"}) == (
        "https://a.example", "https://b.example:8443")


@pytest.mark.parametrize("value", ["*", "https://a.example,*"])
def test_cors_star_is_refused_in_production(value: str) -> None:
    from services.common.settings import cors_origins

    assert cors_origins({"CORS_ORIGINS": value}) == ("*",)
    with pytest.raises(ConfigError):
        cors_origins({"CORS_ORIGINS": value, "DROPBOX_ENV": "production"})


@pytest.mark.parametrize("value", ["a.example", "ftp://a.example", "https://a.example/path", "https://a b"])
def test_cors_origins_must_be_origins(value: str) -> None:
    from services.common.settings import cors_origins

    with pytest.raises(ConfigError):
        cors_origins({"CORS_ORIGINS": value})


def test_install_answers_cors_only_for_configured_origins() -> None:
    from flask import Flask

    from services.common import httpkit

    app = Flask("t")
    httpkit.install(app, "t", {}, cors_origins=("http://good.example",))
    client = app.test_client()
    good = client.get("/health", headers={"Origin": "http://good.example"})
    assert good.headers.get("Access-Control-Allow-Origin") == "http://good.example"
    evil = client.get("/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    bare = Flask("u")
    httpkit.install(bare, "u", {})  # no origins: same origin only, no CORS header for anyone
    assert "Access-Control-Allow-Origin" not in bare.test_client().get(
        "/health", headers={"Origin": "http://good.example"}).headers


def test_filesystem_roots_are_read_once_and_checked() -> None:
    assert CommonSettings.from_env({}).filesystem_roots == ()
    assert CommonSettings.from_env({"FILESYSTEM_ROOTS": "/srv/a/:/data//b"}).filesystem_roots == ("/srv/a", "/data/b")
    for bad in ("relative/x", "/srv:/", ":".join(f"/r{i}" for i in range(40))):
        with pytest.raises(ConfigError, match="FILESYSTEM_ROOTS"):
            CommonSettings.from_env({"FILESYSTEM_ROOTS": bad})
