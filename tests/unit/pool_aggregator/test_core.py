from __future__ import annotations

import pytest

from services.pool_aggregator import core
from services.pool_aggregator.config import Settings
from services.pool_aggregator.core import FAILED, READY

DAY = 86400


@pytest.mark.parametrize("ts, w, start", [
    (0, 60, 0), (59.999, 60, 0), (60, 60, 60), (61, 60, 60),
    (-1, 60, -60), (-60, 60, -60), (-60.5, 60, -120), (-0.001, 1, -1),
    (1_700_000_000.5, 60, 1_699_999_980),
    (1_700_000_000, DAY, 1_699_920_000),  # a days-long window starts at UTC midnight
    (1_700_000_000, 7 * DAY, 1_699_488_000),  # weekly windows from 1970-01-01 (a Thursday)
    (-1, DAY, -DAY),
])
def test_window_alignment(ts: float, w: int, start: int) -> None:
    window = core.window_for(ts, w)
    assert (window.start, window.end) == (start, start + w)
    assert window.contains(ts)
    assert window.start % w == 0


def test_window_edges_belong_to_the_next_window() -> None:
    assert core.window_for(120, 60).start == 120
    assert core.window_for(119.9999999, 60).start == 60


def test_huge_epoch_stays_exact() -> None:
    ts = 2**40 + 0.5
    window = core.window_for(ts, 3600)
    assert window.contains(ts)


@pytest.mark.parametrize("bad", [0, -5, True, 1.5, core.MAX_WINDOW_SECONDS + 1])
def test_window_seconds_validated(bad) -> None:
    with pytest.raises(ValueError):
        core.window_for(10, bad)


def test_non_finite_timestamp_refused() -> None:
    with pytest.raises(ValueError):
        core.window_for(float("inf"), 60)


def test_group_id_is_deterministic() -> None:
    assert core.group_id("p1", 120) == core.group_id("p1", 120) == "p1-120"
    assert core.group_id("p1", -60) == "p1--60"
    assert core.group_id("p1", 120) != core.group_id("p2", 120)


def _ready(now: float, close_at: float, contributors: int, minimum: int | None) -> bool:
    return core.quorum_verdict(now, close_at, contributors, minimum, 0, "process").status == core.READY


def test_readiness_by_time_with_grace() -> None:
    assert not _ready(119.9, 120, 1, None)
    assert _ready(120, 120, 1, None)
    assert not _ready(125, 130, 1, None)
    assert _ready(130, 130, 1, None)
    assert core.quorum_verdict(130, 130, 1, None, 0, "process") == core.Verdict(core.READY)  # not short


def test_readiness_by_contributors() -> None:
    assert not _ready(0, 120, 2, 3)
    assert _ready(0, 120, 3, 3)
    assert not _ready(0, 120, 100, None)
    assert not _ready(0, 120, 100, 0)


def test_quorum_waits_then_processes_short_or_fails() -> None:
    verdict = core.quorum_verdict
    assert verdict(120, 120, 3, 3, 60, "fail") == core.Verdict(core.READY)  # quorum met: not short
    assert verdict(150, 120, 2, 3, 60, "fail") == core.Verdict(None)  # still waiting for the quorum
    assert verdict(180, 120, 2, 3, 60, "fail") == core.Verdict(core.FAILED, reason="quorum_not_met")
    assert verdict(180, 120, 2, 3, 60, "process") == core.Verdict(core.READY, short=True)
    assert verdict(150, 120, 3, 3, 60, "process") == core.Verdict(core.READY)  # met during the wait


def test_pool_quorum_defaults_and_odd_values() -> None:
    assert core.pool_quorum(None) == (0.0, "process")
    assert core.pool_quorum({"quorum_wait_seconds": 30, "on_short": "fail"}) == (30.0, "fail")
    for odd in ({"quorum_wait_seconds": -1}, {"quorum_wait_seconds": "9"}, {"quorum_wait_seconds": True},
                {"quorum_wait_seconds": float("nan")}, {"on_short": "explode"}):
        assert core.pool_quorum(odd) == (0.0, "process"), odd


def test_late_goes_to_current_window() -> None:
    # File stamped at 30 (window [0,60)), now is 200 (window [180,240)).
    assert core.late_window(30, 200, 60) == core.Window(180, 240)
    # Its own window is the current one and closed early (min_contributors): the next one.
    assert core.late_window(190, 200, 60) == core.Window(240, 300)
    # A future-stamped file never moves backwards.
    assert core.late_window(1000, 200, 60) == core.Window(1020, 1080)
    # The current window's group is closed too: step further.
    assert core.late_window(30, 200, 60, attempt=1) == core.Window(240, 300)


def test_lease_expiry_then_failed_at_max() -> None:
    assert core.lease_expired(10, 10)
    assert not core.lease_expired(9.9, 10)
    assert not core.lease_expired(100, None)
    assert core.after_lease_expiry(0, 3) == (READY, 1)
    assert core.after_lease_expiry(1, 3) == (READY, 2)
    assert core.after_lease_expiry(2, 3) == (FAILED, 3)
    assert core.after_lease_expiry(0, 1) == (FAILED, 1)


def test_status_filter() -> None:
    assert core.check_status_filter("ready") == "ready"
    assert core.check_status_filter(None) is None
    with pytest.raises(ValueError):
        core.check_status_filter("bogus")


@pytest.mark.parametrize("raw, clean", [
    ("report.bin", "report.bin"), ("../../etc/passwd", "passwd"), ("a b\x00c.txt", "a_b_c.txt"),
    ("C:\\x\\y.dat", "y.dat"), ("", "file"), ("...", "file"), ("é.f64", "f64"),
])
def test_sanitize_name(raw: str, clean: str) -> None:
    assert core.sanitize_name(raw) == clean


def test_member_name_is_flat_and_sortable() -> None:
    name = core.member_name("2026-01-02T03:04:05.000Z", "abc", "../x.f64")
    assert name == "2026-01-02T03-04-05.000Z_abc_x.f64"
    assert "/" not in name


def test_epoch_iso() -> None:
    assert core.epoch_iso(0) == "1970-01-01T00:00:00.000Z"
    assert core.epoch_iso(-86400) == "1969-12-31T00:00:00.000Z"


def test_grouping_consumers_default_is_48_and_the_environment_wins() -> None:
    assert Settings.from_env({}).grouping_consumers == 48  # the bench's figures: README
    assert Settings.from_env({"GROUPING_CONSUMERS": "64"}).grouping_consumers == 64
