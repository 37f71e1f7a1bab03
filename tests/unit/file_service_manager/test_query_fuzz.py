"""file_service_manager's query parameters (limit, cursor, since, filters): any text answers
200 or SPEC's 400, never 500 (hypothesis over arbitrary strings, as a server hands them over)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.testing import FakeAuth, InMemoryBroker
from services.common.testing.file_service_manager import FakeCache, FakeIndex
from services.file_service_manager import core
from services.file_service_manager.app import create_app
from services.file_service_manager.config import Settings

ADMIN = "tok-admin"
VALUES = st.one_of(st.text(max_size=80), st.sampled_from(["²", "0", "-1", "1001", "9" * 5000, "1e3", " 5", "５"]))


@pytest.fixture
def client() -> Any:
    auth = FakeAuth()
    auth.add_user(ADMIN, "1", "admin", role="admin")
    app = create_app(Settings.from_env({"INTERNAL_API_KEY": "k" * 32}), index=FakeIndex(), cache=FakeCache(),
                     broker=InMemoryBroker(), auth=auth)
    return app.test_client()


@pytest.mark.parametrize("raw", ["²", "５", "9" * 5000, "-1", "0", "1001", " 5", "1e3"])
def test_parse_limit_refuses_anything_but_a_small_ascii_number(raw: str) -> None:
    with pytest.raises(ValueError) as info:
        core.parse_limit(raw)
    assert "limit must be" in str(info.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/files", "/audit", "/client/history/1"]),
       params=st.dictionaries(st.sampled_from(["limit", "cursor", "since", "owner_id", "pool_id", "file_id", "user"]),
                              VALUES, max_size=4))
def test_any_query_answers_200_or_400(client: Any, path: str, params: dict[str, str]) -> None:
    query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    response = client.get(f"{path}?{query}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code in (200, 400), (path, params, response.get_data(as_text=True)[:200])
    if response.status_code == 400:
        assert response.get_json()["error"]["code"] == "bad_request"
