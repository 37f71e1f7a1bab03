"""The offline spool keeps updates on disk and turns them into one batch with SPEC's items."""

from __future__ import annotations

import io
import json

import pytest

from client.spool import OfflineSpool, batches


def test_updates_become_one_batch_in_order_with_their_timestamps(tmp_path):
    spool = OfflineSpool(tmp_path / "spool")
    first = spool.add("p1", b"A" * 10, timestamp="2026-01-01T00:00:01Z", name="a.bin")
    source = tmp_path / "second.bin"
    source.write_bytes(b"B" * 7)
    spool.add("p1", source, timestamp="2026-01-01T00:00:09Z")
    spool.add("p1", io.BytesIO(b"C" * 3), timestamp="2026-01-01T00:00:20Z", name="c.bin")
    spool.add("p2", b"other pool")

    assert spool.pools() == ["p1", "p2"]
    pending = spool.pending("p1")
    assert [u.timestamp for u in pending] == ["2026-01-01T00:00:01Z", "2026-01-01T00:00:09Z",
                                               "2026-01-01T00:00:20Z"]
    assert pending[0] == first
    out = io.BytesIO()
    items = spool.build_batch(pending, out)
    assert out.getvalue() == b"A" * 10 + b"B" * 7 + b"C" * 3
    assert items == [
        {"timestamp": "2026-01-01T00:00:01Z", "offset": 0, "length": 10, "name": "a.bin"},
        {"timestamp": "2026-01-01T00:00:09Z", "offset": 10, "length": 7, "name": "second.bin"},
        {"timestamp": "2026-01-01T00:00:20Z", "offset": 17, "length": 3, "name": "c.bin"},
    ]
    spool.drop(pending)
    assert spool.pending("p1") == [] and spool.pools() == ["p2"]
    assert not list((tmp_path / "spool" / "p1").iterdir())


def test_spool_survives_a_new_process_and_refuses_bad_input(tmp_path):
    OfflineSpool(tmp_path).add("pool-9", b"x" * 5, timestamp="2026-02-02T00:00:00Z")
    again = OfflineSpool(tmp_path)  # what a restarted client sees
    [update] = again.pending("pool-9")
    assert update.size == 5 and json.loads(update.path.with_suffix(".json").read_text())["timestamp"] \
        == "2026-02-02T00:00:00Z"
    with pytest.raises(ValueError):
        again.add("pool-9", b"")
    with pytest.raises(ValueError):
        again.add("../..", b"data")
    assert [u.size for u in again.pending("pool-9")] == [5], "a refused update leaves nothing behind"


def test_batches_respect_size_and_item_limits(tmp_path):
    spool = OfflineSpool(tmp_path)
    for n in (4, 4, 4, 9, 1, 1):
        spool.add("p", b"z" * n)
    pending = spool.pending("p")
    by_size = batches(pending, max_bytes=8, max_items=100)
    assert [[u.size for u in b] for b in by_size] == [[4, 4], [4], [9], [1, 1]]
    by_count = batches(pending, max_bytes=1000, max_items=4)
    assert [len(b) for b in by_count] == [4, 2]
