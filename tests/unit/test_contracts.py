"""Message contracts survive the wire and refuse what they do not know."""

from __future__ import annotations

import dataclasses

import pytest

from services.common import contracts as c
from services.common import topology


def _store_upload(**overrides):
    base = dict(upload_id="u1", owner_id="7", owner_name="alice", file_name="a.bin", size=10, sha256="ab" * 32,
                content_type="application/octet-stream", chunk_size=4, chunk_count=3, cache_key="p:upload:u1",
                items=(c.UploadItem("u1-0000", 0, 4, "2026-01-01T00:00:00Z", "a"),
                       c.UploadItem("u1-0001", 4, 6, "2026-01-01T00:00:05Z", "b")),
                created="2026-01-01T00:00:06Z", pool_id="p1", metadata={"k": [1, 2]})
    return c.StoreUpload(**{**base, **overrides})


def _examples() -> list[c.Message]:
    """One instance of every contract, optional fields filled so nothing escapes the round trip."""
    command = _store_upload()
    return [
        command,
        c.FileStatusChanged(file_id="f", owner_id="1", status=c.RETRYING, attempt=2, reason="r", pool_id="p1",
                            file_name="a.bin"),
        c.UploadStoreFailed(upload_id="u1", attempt=2, reason="mongo down", command=command),
        c.FileStored(file_id="u1-0000", upload_id="u1", owner_id="7", owner_name="alice", file_name="a",
                     size=4, sha256="ab" * 32, content_type="text/plain", timestamp="2026-01-01T00:00:00Z",
                     created="2026-01-01T00:00:06Z", pool_id="p1", kind="result", group_id="g1"),
        c.FileGrouped(file_id="u1-0000", pool_id="p1", group_id="g1", late=True),
        c.UploadStored(upload_id="u1", owner_id="7", owner_name="alice", content_type="text/plain",
                       created="2026-01-01T00:00:06Z", pool_id="p1", kind="file", items=(
                           c.StoredItem(file_id="u1-0000", file_name="a", size=4, sha256="ab" * 32,
                                        timestamp="2026-01-01T00:00:00Z"),
                           c.StoredItem(file_id="u1-0001", file_name="b", size=6, sha256="cd" * 32,
                                        timestamp="2026-01-01T00:00:05Z"))),
        c.FilesGrouped(pool_id="p1", upload_id="u1", groups=(
            c.GroupedFiles(group_id="g1", late=False, file_ids=("u1-0000",)),
            c.GroupedFiles(group_id="g2", late=True, file_ids=("u1-0001",)))),
        c.ResultPublished(result_id="r1", pool_id="p1", group_id="g1", window_start="a", window_end="b",
                          file_name="r.bin", size=3, sha256="cd" * 32, created="c", download_url="http://x/file/r1"),
        c.GroupChanged(pool_id="p1", group_id="g1", status="ready", window_start="a", window_end="b"),
        c.TokenRevoked(token_id="t1", user_id="7"),
        c.MembershipChanged(pool_id="p1", user_id="7", user_name="alice", role=None),
        c.PoolDeleted(pool_id="p1"),
        c.StageResult(result_id="r1", pool_id="p1", group_id="g1", seq=1, window_start="a", file_name="r.bin",
                      size=3, sha256="cd" * 32, download_url="http://x/file/r1", target=0, attempt=2),
        c.AuditRecorded(audit_id="a1", time="t", service="file_uploader", actor="7", action="upload_started",
                        outcome="ok", file_id="u1", group_id="g1", pool_id="p1", bytes=10, sha256="ab" * 32,
                        detail={"attempt": 1, "nested": {"k": [1]}}),
        c.PrestoreUpload(upload_id="u", cache_key="p:upload:u", size=9_000_000, chunk_size=4_194_304,
                         chunk_count=3, content_type="application/octet-stream", file_name="big.bin"),
        c.AuditsRecorded(records=(_audit("a1", bytes=10, sha256="ab" * 32, detail={"nested": {"k": [1]}}),
                                  _audit("a2", file_id=None, bytes=None))),
    ]


def _audit(audit_id: str, **overrides) -> c.AuditRecorded:
    base = dict(audit_id=audit_id, time="2026-01-01T00:00:00.000Z", service="file_uploader", actor="7",
                action="upload_started", outcome="ok", file_id="u1", pool_id="p1")
    return c.AuditRecorded(**{**base, **overrides})


def test_the_examples_cover_every_contract():
    assert {type(m) for m in _examples()} == set(c._REGISTRY.values())


@pytest.mark.parametrize("message", _examples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    decoded = c.decode(message.encode())
    assert decoded == message and type(decoded) is type(message)


def test_nested_parts_come_back_typed():
    failed = c.decode(_examples()[2].encode())
    assert isinstance(failed, c.UploadStoreFailed)
    assert isinstance(failed.command, c.StoreUpload) and isinstance(failed.command.items[0], c.UploadItem)
    assert failed.command.chunk_key(2) == "p:upload:u1:chunk:2"
    status = c.FileStatusChanged(file_id="f", owner_id="1", status=c.RETRYING, attempt=2)
    assert status.key() == "file.status.retrying"
    batch = c.decode(_examples()[5].encode())
    assert isinstance(batch, c.UploadStored) and all(isinstance(i, c.StoredItem) for i in batch.items)
    assert [(f.file_id, f.owner_id, f.pool_id, f.timestamp) for f in batch.files()] == [
        ("u1-0000", "7", "p1", "2026-01-01T00:00:00Z"), ("u1-0001", "7", "p1", "2026-01-01T00:00:05Z")]
    later = b'{"type": "UploadStored", "data": {"upload_id": "u", "owner_id": "o", "owner_name": "n", ' \
        b'"content_type": "t", "created": "c", "items": [{"file_id": "f", "file_name": "a", "size": 1, ' \
        b'"sha256": "s", "timestamp": "t", "added_later": 1}]}}'
    assert c.decode(later).items == (c.StoredItem("f", "a", 1, "s", "t"),)  # a later version's extra field
    grouped = c.decode(_examples()[6].encode())
    assert isinstance(grouped, c.FilesGrouped) and grouped.groups[1] == c.GroupedFiles("g2", True, ("u1-0001",))


@pytest.mark.parametrize("body", [
    b'{"type": "UploadStoreFailed", "data": {"upload_id": "u", "attempt": 1, "reason": "x", "command": {}}}',
    b'{"type": "UploadStoreFailed", "data": {"upload_id": "u", "attempt": 1, "reason": "x", "command": 3}}',
    b'{"type": "FileGrouped", "data": []}',
    b'{"type": "UploadStored", "data": {"upload_id": "u", "owner_id": "o", "owner_name": "n", "content_type": "t",'
    b' "created": "c", "items": [3]}}',
    b'{"type": "UploadStored", "data": {"upload_id": "u", "owner_id": "o", "owner_name": "n", "content_type": "t",'
    b' "created": "c", "items": [{"file_id": "f"}]}}',
    b'{"type": "FilesGrouped", "data": {"pool_id": "p", "upload_id": "u", "groups": [{"group_id": "g",'
    b' "late": false, "file_ids": [1]}]}}',
    b'{"type": "FilesGrouped", "data": {"pool_id": "p", "upload_id": "u", "groups": "g"}}',
])
def test_malformed_nested_parts_are_refused(body):
    with pytest.raises(c.UnknownMessage):
        c.decode(body)


def _published_keys() -> list[tuple[str, str]]:
    keys = []
    for message in _examples():
        if isinstance(message, c.FileStatusChanged):
            keys += [(type(message).__name__, f"file.status.{status}") for status in c.FILE_STATUSES]
        else:
            keys.append((type(message).__name__, message.key()))
    return keys


@pytest.mark.parametrize(("name", "key"), _published_keys())
def test_every_published_routing_key_reaches_a_queue(name, key):
    """A message nobody is bound to is silently dropped by the topic exchange: never again."""
    if key in topology.CONTROL_BINDINGS:
        return  # each gateway binds its own exclusive control queue to these (messaging.ControlConsumer)
    assert topology.queues_for(topology.EXCHANGE, key), f"{name} ({key}) reaches no queue"


def test_control_bindings_are_published_keys():
    assert set(topology.CONTROL_BINDINGS) <= {key for _, key in _published_keys()}


def test_messages_are_frozen_and_carry_no_bytes():
    message = _store_upload()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.size = 11  # type: ignore[misc]
    for cls in c._REGISTRY.values():
        for f in dataclasses.fields(cls):
            assert "bytes" not in str(f.type) or f.name == "bytes", (cls.__name__, f.name, f.type)


@pytest.mark.parametrize("body", [b"not json", b'{"type": "Nope", "data": {}}', b'{"type": "FileStored"}',
                                  b'{"type": "FileGrouped", "data": {"file_id": "x"}}'])
def test_unknown_or_incomplete_bodies_are_refused(body):
    with pytest.raises(c.UnknownMessage):
        c.decode(body)


def test_a_malformed_or_oversized_batch_is_refused_at_decode():
    """Such a batch goes aside at once (unknown), not through five failed grouping slices."""
    import json

    from services.common.contracts import MAX_STORED_ITEMS, UnknownMessage, UploadStored, decode

    item = {"file_id": "f1", "file_name": "a", "size": 1, "sha256": "s", "timestamp": "t"}
    base = {"upload_id": "u", "owner_id": "1", "owner_name": "a", "content_type": "x", "created": "t"}

    def body(items: list) -> bytes:
        return json.dumps({"type": "UploadStored", "data": {**base, "items": items}}).encode()

    assert isinstance(decode(body([item])), UploadStored)
    for bad in ([{**item, "size": "abc"}], [{**item, "size": -1}], [{**item, "file_id": 7}], [],
                [item] * (MAX_STORED_ITEMS + 1)):
        with pytest.raises(UnknownMessage):
            decode(body(bad))


def _audits_body(records: object) -> bytes:
    import json
    return json.dumps({"type": "AuditsRecorded", "data": {"records": records}}).encode()


def test_an_audit_batch_comes_back_typed_and_bounded():
    one = _audit("a1").to_dict()
    batch = c.decode(_audits_body([one] * c.MAX_AUDIT_RECORDS))
    assert isinstance(batch, c.AuditsRecorded) and len(batch.records) == c.MAX_AUDIT_RECORDS
    assert all(isinstance(r, c.AuditRecorded) for r in batch.records)
    assert c.AUDIT_BATCH <= c.MAX_AUDIT_RECORDS  # what a trail sends, a consumer decodes
    # A later version's extra field in a record is left out, as for a whole message.
    assert c.decode(_audits_body([{**one, "added_later": 1}])).records == (_audit("a1"),)
    # The single record and the batch share the audit queue (one routing key, one binding).
    assert c.AuditsRecorded.routing_key == c.AuditRecorded.routing_key
    assert topology.queues_for(topology.EXCHANGE, c.AuditsRecorded.routing_key) == [topology.AUDIT_QUEUE]


@pytest.mark.parametrize("records", [
    [],  # nothing to record is no message
    [_audit("a1").to_dict()] * (c.MAX_AUDIT_RECORDS + 1),  # past the bound
    "a1", [3], [None],
    [{"audit_id": "a1"}],  # a record without its required fields
    [{**_audit("a1").to_dict(), "bytes": 10 ** 30}],  # decodes from JSON, never storable as BSON
    [{**_audit("a1").to_dict(), "bytes": True}],
    [{**_audit("a1").to_dict(), "bytes": "10"}],
    [{**_audit("a1").to_dict(), "actor": 7}],
    [{**_audit("a1").to_dict(), "audit_id": ""}],
    [{**_audit("a1").to_dict(), "file_id": ["f"]}],
    [{**_audit("a1").to_dict(), "detail": "x"}],
    [_audit("a1").to_dict(), {**_audit("a2").to_dict(), "time": None}],  # one bad record refuses the batch
], ids=lambda r: repr(r)[:40])
def test_a_malformed_audit_batch_is_refused(records):
    with pytest.raises(c.UnknownMessage):
        c.decode(_audits_body(records))
