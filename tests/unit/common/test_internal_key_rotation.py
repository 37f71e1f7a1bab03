"""INTERNAL_API_KEY_PREVIOUS: the key being rotated out is accepted on internal routes
alongside INTERNAL_API_KEY, so the key can be rotated without downtime."""

from __future__ import annotations

import pytest
from flask import Flask

from services.common import httpkit
from services.common.errors import ApiError
from services.common.settings import DEV_SECRETS, CommonSettings, ConfigError

CURRENT = "internal-key-new-0123456789"
OLD = "internal-key-old-0123456789"


def accepted(given: str | None, expected: str, previous: str = "") -> bool:
    app = Flask(__name__)
    headers = {} if given is None else {"X-Internal-Key": given}
    with app.test_request_context("/internal", headers=headers):
        try:
            httpkit.check_internal_key(expected, previous)
        except ApiError as exc:
            assert exc.status == 401
            return False
    return True


def test_the_current_key_and_only_it_without_a_rotation() -> None:
    assert accepted(CURRENT, CURRENT)
    assert not accepted(OLD, CURRENT)
    assert not accepted("", CURRENT)
    assert not accepted(None, CURRENT)
    assert not accepted(CURRENT[:-1], CURRENT)


def test_the_previous_key_is_accepted_during_a_rotation() -> None:
    assert accepted(CURRENT, CURRENT, OLD)
    assert accepted(OLD, CURRENT, OLD)
    assert not accepted("something-else", CURRENT, OLD)
    assert not accepted("", CURRENT, OLD)


def test_an_empty_previous_key_never_matches_an_empty_header() -> None:
    assert not accepted("", CURRENT, "")
    assert not accepted(None, CURRENT, "")


def test_settings_read_the_previous_key() -> None:
    assert CommonSettings.from_env({}).internal_api_key_previous == ""
    rotating = CommonSettings.from_env({"INTERNAL_API_KEY": CURRENT, "INTERNAL_API_KEY_PREVIOUS": f" {OLD} "})
    assert rotating.internal_api_key == CURRENT
    assert rotating.internal_api_key_previous == OLD


@pytest.mark.parametrize("previous, message", [
    (f"{OLD},another", "one key"),
    (CURRENT, "differ"),
])
def test_settings_refuse_a_list_or_the_current_key(previous: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommonSettings.from_env({"INTERNAL_API_KEY": CURRENT, "INTERNAL_API_KEY_PREVIOUS": previous})


@pytest.mark.parametrize("default", sorted(DEV_SECRETS.values()))
def test_production_refuses_a_development_default_as_the_previous_key(default: str) -> None:
    production = {"DROPBOX_ENV": "production", "INTERNAL_API_KEY": CURRENT}
    with pytest.raises(ConfigError, match="INTERNAL_API_KEY_PREVIOUS"):
        CommonSettings.from_env({**production, "INTERNAL_API_KEY_PREVIOUS": default})
    # Outside production the development default is a fine previous key.
    assert CommonSettings.from_env({"INTERNAL_API_KEY": CURRENT,
                                    "INTERNAL_API_KEY_PREVIOUS": default}).internal_api_key_previous == default
    assert CommonSettings.from_env({**production, "INTERNAL_API_KEY_PREVIOUS": OLD}).internal_api_key_previous == OLD
