"""GET /file/<id> answers 200/206/416 for any Range header and sends safe headers for any
stored name or content type (issue 10: superscript digits, 5,000 digits and a non-Latin-1
content_type answered 500). Property tests over arbitrary strings with hypothesis."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.testing import FakeAuth, InMemoryBroker
from services.common.testing.file_service_manager import FakeBackend, FakeCache, FakeIndex
from services.file_service_manager import backends, core
from services.file_service_manager.app import create_app
from services.file_service_manager.config import Settings

DATA = bytes(range(256)) * 4  # 1,024 bytes
TOKEN = "tok-alice"

# Range-like text is where the bugs were: build it from the pieces of one as well as from anything.
RANGE_PIECES = st.sampled_from(["bytes", "Bytes", "=", "-", ",", " ", "0", "9", "²", "٣", "1" * 5000, "+", "\t",
                                "items", "bytes=", "5", "999999999999999999999", "1023", "1024"])
NUMBERS = st.one_of(st.sampled_from(["", "0", "5", "1023", "1024", "1" * 5000, "9" * 21, "-3", "+1", " 7 "]),
                    st.text(alphabet="0123456789²³¹٣߀", max_size=30))
STRUCTURED = st.builds(lambda unit, a, b, tail: f"{unit}={a}-{b}{tail}",
                       st.sampled_from(["bytes", "BYTES", " bytes", "items", ""]), NUMBERS, NUMBERS,
                       st.sampled_from(["", ",0-1", ", 5-", " ", "-", "\t"]))
RANGE_HEADERS = st.one_of(st.text(max_size=60), st.lists(RANGE_PIECES, max_size=8).map("".join), STRUCTURED)


@pytest.fixture
def client() -> Any:
    auth = FakeAuth()
    auth.add_user(TOKEN, "7", "alice")
    index = FakeIndex()
    settings = Settings.from_env({"INTERNAL_API_KEY": "k" * 32})
    default = FakeBackend.over(index)  # the default backend's bytes are index.files
    app = create_app(settings, index=index, cache=FakeCache(), broker=InMemoryBroker(), auth=auth,
                     storage=backends.Storages(settings.default_storage, lambda spec: default))
    index.files["f1"] = DATA
    index.upsert_stored({"file_id": "f1", "file_name": "a.bin", "size": len(DATA), "status": "uploaded_successfully",
                         "sha256": hashlib.sha256(DATA).hexdigest(), "owner_id": "7", "pool_id": None,
                         "content_type": "application/octet-stream", "kind": "file"})
    test_client = app.test_client()
    test_client.index = index
    return test_client


def get(client: Any, **headers: str) -> Any:
    return client.get("/file/f1", headers={"Authorization": f"Bearer {TOKEN}", **headers})


@given(header=st.one_of(st.none(), RANGE_HEADERS), size=st.integers(min_value=0, max_value=10 ** 6))
def test_parse_range_is_total(header: str | None, size: int) -> None:
    try:
        span = core.parse_range(header, size)
    except core.RangeNotSatisfiable:
        return
    if span is not None:
        start, end = span
        assert 0 <= start <= end < size


@pytest.mark.parametrize("header,status", [
    ("bytes=²-5", 200), ("bytes=0-²", 200), ("bytes=" + "1" * 5000 + "-", 416), ("bytes=0-" + "9" * 5000, 206),
    ("bytes=-" + "9" * 5000, 206), ("bytes=0-1,5-6", 200), ("bytes=-5-", 200), ("bytes=--5", 200),
    ("bytes=9-2", 200), ("bytes=+1-2", 200), ("bytes=1024-", 416), ("bytes=-0", 416), ("bytes = 1 - 2", 206),
])
def test_odd_ranges_answer_200_206_or_416(client: Any, header: str, status: int) -> None:
    response = get(client, Range=header)
    assert response.status_code == status
    if status == 206:
        first, _, rest = response.headers["Content-Range"].removeprefix("bytes ").partition("-")
        assert response.data == DATA[int(first):int(rest.split("/")[0]) + 1]
    elif status == 200:
        assert response.data == DATA
    else:
        assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=RANGE_HEADERS)
def test_any_range_header_answers_200_206_or_416(client: Any, header: str) -> None:
    # Straight into the WSGI environ, as a server hands it over: the bytes read as Latin-1
    # (a raw 0xB2 is "²"; text beyond Latin-1 arrives as its UTF-8 bytes).
    try:
        header.encode("latin-1")
        raw = header
    except UnicodeEncodeError:
        raw = header.encode("utf-8").decode("latin-1")
    response = client.get("/file/f1", headers={"Authorization": f"Bearer {TOKEN}"},
                          environ_overrides={"HTTP_RANGE": raw})
    assert response.status_code in (200, 206, 416)


@pytest.mark.parametrize("stored", ["текст/plain", "text/plain\r\nX-Evil: 1", "x" * 5000, 42, None, "", "text/plaïn"])
def test_a_bad_stored_content_type_is_served_as_octet_stream(client: Any, stored: object) -> None:
    client.index.records["f1"]["content_type"] = stored
    response = get(client)
    assert response.status_code == 200 and response.data == DATA
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "X-Evil" not in response.headers


def test_a_valid_stored_content_type_is_kept(client: Any) -> None:
    client.index.records["f1"]["content_type"] = "image/png"
    assert get(client).headers["Content-Type"] == "image/png"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=400), st.integers(), st.none()))
def test_any_stored_name_gives_a_latin1_single_line_disposition(client: Any, name: object) -> None:
    client.index.records["f1"]["file_name"] = name
    response = get(client)
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    disposition.encode("latin-1")
    assert "\r" not in disposition and "\n" not in disposition and len(disposition) < 2000
    assert disposition.startswith('attachment; filename="')


def test_the_original_name_survives_in_filename_star(client: Any) -> None:
    client.index.records["f1"]["file_name"] = "数据 \"v2\".bin"
    disposition = get(client).headers["Content-Disposition"]
    assert "filename*=UTF-8''%E6%95%B0%E6%8D%AE%20%22v2%22.bin" in disposition


def test_the_runtime_starts_the_audit_trail_the_service_records_into(client) -> None:
    from services.common.runtime import runtime_of

    app = client.application
    assert runtime_of(app).audit is app.extensions["deps"].audit
