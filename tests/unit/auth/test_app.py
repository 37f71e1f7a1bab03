"""auth's wiring on in-memory stand-ins: prepare, the production admin check."""

from __future__ import annotations

import dataclasses

import pytest

from services.auth import accounts, app
from services.common.testing import InMemoryBroker
from services.common.testing.auth import FakeAuthStore

from .conftest import FAST_HASHER, make_deps

PRODUCTION = {"DROPBOX_ENV": "production", "JWT_SECRET": "p" * 40, "INTERNAL_API_KEY": "prod-internal-key",
              "ADMIN_PASSWORD": "prod-admin-password"}


def test_prepare_migrates_and_creates_the_admin() -> None:
    deps = make_deps()
    app.prepare(deps)
    store = deps.store
    assert isinstance(store, FakeAuthStore) and store.migrations == 1
    assert accounts.login(deps, "admin", {"password": "admin-password"})["role"] == "admin"


def test_production_refuses_a_stored_admin_with_the_default_password(capsys: pytest.CaptureFixture[str]) -> None:
    development = make_deps()
    app.prepare(development)  # the database was first started in development
    deps = dataclasses.replace(make_deps(**PRODUCTION), store=development.store)
    assert accounts.admin_password_is_default(deps)
    with pytest.raises(SystemExit) as stopped:
        app.prepare(deps)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("auth: configuration error:") and "DROPBOX_ENV=production" in err and "'admin'" in err


def test_production_starts_with_an_admin_of_its_own_password() -> None:
    deps = make_deps(**PRODUCTION)
    app.prepare(deps)
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
