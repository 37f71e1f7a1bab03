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
