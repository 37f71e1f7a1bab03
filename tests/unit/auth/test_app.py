"""auth's wiring on in-memory stand-ins: prepare, the production admin check."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from services.auth import accounts, app, startup
from services.common.testing import InMemoryBroker
from services.common.testing.auth import FakeAuthStore

from .conftest import FAST_HASHER, make_deps

PRODUCTION = {"DROPBOX_ENV": "production", "JWT_SECRET": "p" * 40, "INTERNAL_API_KEY": "prod-internal-key",
              "ADMIN_PASSWORD": "prod-admin-password"}


def test_prepare_migrates_and_creates_the_admin() -> None:
    deps = make_deps()
    startup.prepare(deps)
    store = deps.store
    assert isinstance(store, FakeAuthStore) and store.migrations == 1
    assert accounts.login(deps, "admin", {"password": "admin-password"})["role"] == "admin"


def test_production_refuses_a_stored_admin_with_the_default_password(capsys: pytest.CaptureFixture[str]) -> None:
    development = make_deps()
    startup.prepare(development)  # the database was first started in development
    deps = dataclasses.replace(make_deps(**PRODUCTION), store=development.store)
    assert accounts.admin_password_is_default(deps)
    with pytest.raises(SystemExit) as stopped:
        startup.prepare(deps)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("auth: configuration error:") and "DROPBOX_ENV=production" in err and "'admin'" in err


def test_production_starts_with_an_admin_of_its_own_password() -> None:
    deps = make_deps(**PRODUCTION)
    startup.prepare(deps)
    assert not accounts.admin_password_is_default(deps)
    assert accounts.login(deps, "admin", {"password": "prod-admin-password"})["role"] == "admin"


def test_create_app_wires_deps_without_connecting() -> None:
    from services.auth.config import Settings
    from services.auth.core import Passwords

    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"})
    flask_app = app.create_app(settings, store=FakeAuthStore(), broker=InMemoryBroker(),
                               passwords=Passwords(FAST_HASHER, slots=1))
    client = flask_app.test_client()
    assert client.get("/ready").get_json()["checks"] == {"postgres": True, "rabbitmq": True}
    missing = client.get("/auth/validate")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    # runtime.start starts the trail the use cases record into (batched, off the request path).
    from services.common.runtime import runtime_of

    assert runtime_of(flask_app).audit is flask_app.extensions["deps"].audit


def _client() -> Any:
    from services.auth.config import Settings
    from services.auth.core import Passwords

    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0"})
    return app.create_app(settings, store=FakeAuthStore(), broker=InMemoryBroker(),
                          passwords=Passwords(FAST_HASHER, slots=1)).test_client()


def test_a_declared_large_body_is_refused_as_json_413_before_it_is_read() -> None:
    import io

    class Untouchable(io.BytesIO):
        def read(self, *args: object) -> bytes:
            raise AssertionError("the body was read")

    client = _client()
    response = client.post("/auth/signup", input_stream=Untouchable(), content_type="application/json",
                           environ_overrides={"CONTENT_LENGTH": str(64 * 1024 + 1)})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_a_body_without_length_is_read_through_a_bounded_stream() -> None:
    import io
    import json

    client = _client()
    big = json.dumps({"user_name": "alice", "password": "p" * (70 * 1024)}).encode()
    response = client.post("/auth/signup", input_stream=io.BytesIO(big), content_type="application/json",
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    small = json.dumps({"user_name": "alice", "password": "password-123"}).encode()
    ok = client.post("/auth/signup", input_stream=io.BytesIO(small), content_type="application/json",
                     environ_overrides={"wsgi.input_terminated": True})
    assert ok.status_code == 201, ok.get_json()


def test_internal_routes_accept_the_previous_internal_key_during_a_rotation() -> None:
    from services.auth.config import Settings
    from services.auth.core import Passwords

    settings = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "INTERNAL_API_KEY": "new-internal-key",
                                  "INTERNAL_API_KEY_PREVIOUS": "old-internal-key"})
    client = app.create_app(settings, store=FakeAuthStore(), broker=InMemoryBroker(),
                            passwords=Passwords(FAST_HASHER, slots=1)).test_client()
    for key in ("new-internal-key", "old-internal-key"):
        # An unknown pool: the key was accepted, the pool not found.
        answer = client.get("/auth/internal/pools/p_missing", headers={"X-Internal-Key": key})
        assert answer.status_code == 404, (key, answer.get_json())
    refused = client.get("/auth/internal/pools/p_missing", headers={"X-Internal-Key": "other-key"})
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "unauthorized"
