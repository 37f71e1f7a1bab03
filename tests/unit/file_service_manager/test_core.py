"""file_service_manager's pure rules: ranges, ETags, names, access, item spans, paging."""

from __future__ import annotations

import pytest

from services.common.contracts import UploadItem
from services.file_service_manager import core
from services.file_service_manager.config import Settings


@pytest.mark.parametrize("header,expected", [
    (None, None), ("", None), ("bytes=0-99", (0, 99)), ("bytes=10-", (10, 999)), ("bytes=-100", (900, 999)),
    ("bytes=-5000", (0, 999)), ("bytes=990-5000", (990, 999)), ("bytes=0-0", (0, 0)),
    ("items=0-5", None), ("bytes=0-5,10-20", None), ("bytes=5-2", None), ("bytes=abc", None),
    ("bytes=-", None),
])
def test_parse_range(header, expected) -> None:
    assert core.parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(core.RangeNotSatisfiable):
        core.parse_range(header, 1000)


def test_etag() -> None:
    sha = "ab" * 32
    assert core.etag(sha) == f'"{sha}"'
    assert core.etag_matches(f'"{sha}"', sha)
    assert core.etag_matches(f'W/"x", "{sha}"', sha)
    assert core.etag_matches("*", sha)
    assert not core.etag_matches('"other"', sha)
    assert not core.etag_matches(None, sha)


def test_content_disposition_has_ascii_fallback_and_utf8_name() -> None:
    value = core.content_disposition('résumé "final".pdf')
    assert value.startswith('attachment; filename="r_sum_ _final_.pdf"')
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf" in value


def test_access_rules() -> None:
    own = {"owner_id": "u1", "pool_id": None}
    pooled = {"owner_id": "u1", "pool_id": "p1"}
    result = {"owner_id": "processor:p1", "pool_id": "p1", "kind": "result"}
    # SPEC: members receive the pool's results; another member's update is not theirs
    assert core.can_download(result, core.Caller(user_id="u3", pools=frozenset({"p1"})))
    assert not core.can_download(result, core.Caller(user_id="u3", pools=frozenset({"p2"})))
    assert core.can_download(own, core.Caller(user_id="u1"))
    assert not core.can_download(own, core.Caller(user_id="u2"))
    assert core.can_download(own, core.Caller(user_id="u2", is_admin=True))
    assert not core.can_download(pooled, core.Caller(user_id="u3", pools=frozenset({"p1"})))
    assert not core.can_download(pooled, core.Caller(user_id="u3", pools=frozenset({"p2"})))
    assert core.can_download(pooled, core.Caller(processor_pool="p1"))
    assert not core.can_download(pooled, core.Caller(processor_pool="p2"))
    assert not core.can_download(own, core.Caller(processor_pool="p1"))


def test_item_spans_cover_the_item_exactly() -> None:
    item = UploadItem(file_id="f", offset=1000, length=2500, timestamp="t", name="n")
    spans = list(core.item_spans(item, 1024))
    assert spans == [(0, 1000, 1024), (1, 0, 1024), (2, 0, 1024), (3, 0, 428)]
    assert sum(e - s for _, s, e in spans) == 2500
    one = UploadItem(file_id="f", offset=0, length=1024, timestamp="t", name="n")
    assert list(core.item_spans(one, 1024)) == [(0, 0, 1024)]


def test_status_never_goes_backwards() -> None:
    assert "uploaded_successfully" not in core.ALLOWED_FROM["retrying"]
    assert "upload_failed" not in core.ALLOWED_FROM["uploaded_successfully"]
    assert core.ALLOWED_FROM["cached"] == ()


def test_limit_and_cursor() -> None:
    assert core.parse_limit(None) == 100
    assert core.parse_limit("1000") == 1000
    for bad in ("0", "1001", "-1", "x"):
        with pytest.raises(ValueError):
            core.parse_limit(bad)
    cursor = core.encode_cursor("2024-01-01T00:00:00.000Z", "abc")
    assert core.decode_cursor(cursor) == ("2024-01-01T00:00:00.000Z", "abc")
    with pytest.raises(ValueError):
        core.decode_cursor("!!notbase64")


def test_public_record_has_spec_keys() -> None:
    rec = core.public_record({"_id": "x", "file_id": "x", "status": "cached", "kind": "file"})
    assert list(rec)[:12] == list(core.RECORD_KEYS)
    assert rec["late"] is False and "_id" not in rec


def test_fail_pattern_is_refused_in_production() -> None:
    from services.common.settings import ConfigError

    assert Settings.from_env({"STORE_FAIL_PATTERN": "^fail"}).store_fail_pattern == "^fail"
    assert core.should_fail("^fail", "fail-me.txt") and not core.should_fail("^fail", "ok.txt")
    with pytest.raises(ConfigError):
        Settings.from_env({"STORE_FAIL_PATTERN": "^fail", "DROPBOX_ENV": "production",
                           "INTERNAL_API_KEY": "k" * 40})
    with pytest.raises(ConfigError):
        Settings.from_env({"STORE_FAIL_PATTERN": "("})
