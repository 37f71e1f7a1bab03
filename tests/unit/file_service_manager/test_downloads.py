"""Download planning and index reads, with in-memory stores."""

from __future__ import annotations

import pytest

from services.common.authclient import Identity
from services.common.errors import ApiError
from services.file_service_manager import core, downloads, files, handlers

from .conftest import alice, command


@pytest.fixture
def stored(deps):
    deps.broker.publish(command(deps, b"0123456789"))
    deps.broker.deliver(handlers.consumers(deps))
    return deps


OWNER = core.Caller(user_id="7")


def test_whole_file_streams_in_pieces(stored) -> None:
    plan = downloads.plan_download(stored, "u1", OWNER, None, None)
    assert plan.status == 200 and plan.headers["Content-Length"] == "10" and plan.memory is None
    assert b"".join(plan.stream) == b"0123456789"
    assert stored.index.opened[-1].closed


def test_a_range_answers_206(stored) -> None:
    plan = downloads.plan_download(stored, "u1", OWNER, "bytes=2-4", None)
    assert plan.status == 206 and plan.headers["Content-Range"] == "bytes 2-4/10"
    assert b"".join(plan.stream) == b"234"


def test_an_unsatisfiable_range_is_416_with_the_size(stored) -> None:
    with pytest.raises(downloads.RangeRefused) as info:
        downloads.plan_download(stored, "u1", OWNER, "bytes=50-60", None)
    assert info.value.status == 416 and info.value.content_range == "bytes */10"


def test_a_matching_etag_is_304_without_a_body(stored) -> None:
    etag = downloads.plan_download(stored, "u1", OWNER, None, None).headers["ETag"]
    plan = downloads.plan_download(stored, "u1", OWNER, None, etag)
    assert plan.status == 304 and plan.stream is None and plan.memory is None


@pytest.mark.parametrize("who", [core.Caller(user_id="8"), core.Caller(processor_pool="p2")])
def test_others_get_the_same_404_as_unknown_ids(stored, who) -> None:
    for file_id in ("u1", "nope"):
        with pytest.raises(ApiError) as info:
            downloads.plan_download(stored, file_id, who, None, None)
        assert (info.value.status, info.value.message) == (404, "no such file")


def test_results_are_served_from_memory(deps) -> None:
    deps.broker.publish(command(deps, b"result-bytes", kind="result"))
    deps.broker.deliver(handlers.consumers(deps))
    member = core.Caller(user_id="8", pools=frozenset({"p1"}))
    first = downloads.plan_download(deps, "u1", member, None, None)
    second = downloads.plan_download(deps, "u1", member, "bytes=0-5", None)
    assert first.memory == b"result-bytes" and second.memory == b"result"
    assert deps.hot.get("u1") == b"result-bytes"


def test_every_download_is_audited(stored) -> None:
    downloads.plan_download(stored, "u1", OWNER, None, None)
    downloaded = [m for m in stored.broker.of_type(type(stored.broker.published[-1].message))
                  if getattr(m, "action", None) == "downloaded"]
    assert downloaded and downloaded[-1].actor == "7" and downloaded[-1].bytes == 10


def test_history_is_the_owners_or_an_admins(stored) -> None:
    assert [r["file_id"] for r in files.history(stored, alice(), "7")] == ["u1"]
    with pytest.raises(ApiError) as info:
        files.history(stored, Identity("8", "bob", "user", {}), "7")
    assert info.value.status == 403
    assert files.history(stored, Identity("0", "root", "admin", {}), "7")


def test_a_user_lists_only_their_own_files(stored) -> None:
    bob = Identity("8", "bob", "user", {})
    assert files.list_files(stored, bob, {"owner_id": "7"}, 10) == []
    assert len(files.list_files(stored, Identity("0", "root", "admin", {}), {"owner_id": "7"}, 10)) == 1


def test_audit_pages_carry_a_cursor_until_the_last(stored) -> None:
    admin = Identity("0", "root", "admin", {})
    events, cursor = files.audit_page(stored, admin, {}, None, 1)
    assert len(events) == 1 and cursor is not None
    rest, last = files.audit_page(stored, admin, {}, core.decode_cursor(cursor), 100)
    assert last is None and all(e["audit_id"] != events[0]["audit_id"] for e in rest)
    with pytest.raises(ApiError):
        files.audit_page(stored, alice(), {}, None, 1)
