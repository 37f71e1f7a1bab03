"""The client's gapless result feed: in order, each seq once, gaps reported, state kept on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.feed import DUPLICATE, GAP, NEW, ResultFeed


def result(seq: int, pool: str = "p1") -> dict:
    return {"pool_id": pool, "seq": seq, "result_id": f"r{seq}"}


def test_in_order_results_are_delivered_once() -> None:
    feed, got = ResultFeed(), []
    assert [feed.offer(result(s), got.append) for s in (1, 2, 2, 1, 3)] == [NEW, NEW, DUPLICATE, DUPLICATE, NEW]
    assert [r["seq"] for r in got] == [1, 2, 3]
    assert feed.duplicates == 2 and feed.last_seq("p1") == 3


def test_a_gap_holds_later_results_back_until_it_is_filled() -> None:
    feed, got = ResultFeed(), []
    assert feed.offer(result(1), got.append) == NEW
    assert feed.offer(result(4), got.append) == GAP
    assert feed.offer(result(3), got.append) == GAP
    assert [r["seq"] for r in got] == [1] and feed.last_seq("p1") == 1
    assert feed.offer(result(2), got.append) == NEW  # the fetch that fills the gap
    assert [r["seq"] for r in got] == [1, 2, 3, 4]
    assert feed.offer(result(3), got.append) == DUPLICATE  # the fetch returns 3 and 4 again
    assert [r["seq"] for r in got] == [1, 2, 3, 4]


def test_pools_are_independent() -> None:
    feed, got = ResultFeed(), []
    feed.offer(result(1, "a"), got.append)
    assert feed.offer(result(1, "b"), got.append) == NEW
    assert feed.offer(result(3, "b"), got.append) == GAP
    assert (feed.last_seq("a"), feed.last_seq("b")) == (1, 1)


def test_held_back_results_are_bounded() -> None:
    feed, got = ResultFeed(max_waiting=3), []
    for seq in range(3, 100):
        feed.offer(result(seq), got.append)
    assert len(feed._waiting["p1"]) == 3
    feed.offer(result(1), got.append)
    feed.offer(result(2), got.append)
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5]  # 6.. were dropped: the gap fetch brings them


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "feed.json"
    feed, got = ResultFeed(state, save_every=1), []
    for seq in (1, 2, 3):
        feed.offer(result(seq), got.append)
    again, later = ResultFeed(state), []
    assert again.last_seq("p1") == 3
    assert again.offer(result(3), later.append) == DUPLICATE
    assert again.offer(result(4), later.append) == NEW and later == [result(4)]


def test_saves_are_batched_and_flush_saves(tmp_path: Path) -> None:
    state = tmp_path / "feed.json"
    feed = ResultFeed(state, save_every=10, save_seconds=3600)
    for seq in range(1, 6):
        feed.offer(result(seq), lambda r: None)
    assert not state.exists()  # 5 < save_every: nothing written yet
    assert feed.flush() == {"p1": 5}
    assert json.loads(state.read_text()) == {"p1": 5}


def test_a_torn_state_file_starts_over(tmp_path: Path) -> None:
    state = tmp_path / "feed.json"
    state.write_text('{"p1": 7')
    assert ResultFeed(state).last_seq("p1") == 0


@pytest.mark.parametrize("seq", [None, 0, -1, "3", True, 1.5])
def test_a_result_without_a_valid_seq_is_refused(seq: object) -> None:
    with pytest.raises(ValueError):
        ResultFeed().offer({"pool_id": "p1", "seq": seq}, lambda r: None)
