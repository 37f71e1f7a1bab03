"""Time-driven group transitions, run every ``tick_seconds`` by every aggregator process.

Several processes tick at once; each transition is a conditional update in
MongoDB (store.py) that exactly one of them wins, and only the winner
publishes ``GroupChanged`` and announces to the processor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from services.common.contracts import GroupChanged

from . import core
from .core import epoch_iso
from .metrics import AggregatorMetrics
from .pools import PoolCache
from .store import GroupStore

log = logging.getLogger(__name__)


class Announcer:
    """POSTs ``{pool_id, group_id, files_url}`` to a pool's processor_url, off the caller's thread.

    The processor may be down: a few attempts with backoff, then a logged,
    counted failure. The processor also polls, so an announcement is a hint.
    """

    def __init__(self, metrics: AggregatorMetrics, base_url: str, *, timeout: float = 5.0, attempts: int = 3,
                 backoff: float = 0.5) -> None:
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    def files_url(self, pool_id: str, gid: str) -> str:
        return f"{self.base_url}/pools/{pool_id}/groups/{gid}/files"

    def announce(self, pool: dict | None, group: dict) -> threading.Thread | None:
        url = (pool or {}).get("processor_url")
        if not url or not str(url).startswith(("http://", "https://")):
            return None
        body = {"pool_id": group["pool_id"], "group_id": group["_id"],
                "files_url": self.files_url(group["pool_id"], group["_id"])}
        thread = threading.Thread(target=self._post, args=(str(url), body), name="announce", daemon=True)
        thread.start()
        return thread

    def _post(self, url: str, body: dict) -> None:
        last = ""
        for attempt in range(self.attempts):
            try:
                response = requests.post(url, json=body, timeout=self.timeout)
                if response.status_code < 300:
                    return
                last = f"status {response.status_code}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(self.backoff * (2 ** attempt))
        self.metrics.announce_failures.inc()
        log.warning("announce_failed", extra={"group_id": body["group_id"], "pool_id": body["pool_id"],
                                              "error": last})


class Lifecycle:
    """Group transitions shared by the ticker and the worker (min_contributors: ready at once)."""

    def __init__(self, store: GroupStore, pools: PoolCache, broker: Any, metrics: AggregatorMetrics,
                 announcer: Announcer, *, lease_max_expiries: int = core.DEFAULT_LEASE_MAX_EXPIRIES,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.pools = pools
        self.broker = broker
        self.metrics = metrics
        self.announcer = announcer
        self.lease_max_expiries = lease_max_expiries
        self.clock = clock

    def publish_changed(self, group: dict) -> None:
        try:
            self.broker.publish(GroupChanged(
                pool_id=group["pool_id"], group_id=group["_id"], status=group["status"],
                window_start=epoch_iso(group["window_start"]), window_end=epoch_iso(group["window_end"])))
        except Exception as exc:  # noqa: BLE001 - the transition is durable; the event is informational
            log.error("group_changed_lost", extra={"group_id": group["_id"], "error": repr(exc)})

    def make_ready(self, gid: str) -> dict | None:
        """open -> ready (if this process wins), then event and announcement."""
        group = self.store.mark_ready(gid, self.clock())
        if group is None:
            return None
        log.info("group_ready", extra={"group_id": gid, "pool_id": group["pool_id"]})
        self.publish_changed(group)
        self._announce(group)
        return group

    def _announce(self, group: dict) -> None:
        try:
            pool = self.pools.get(group["pool_id"])
        except Exception as exc:  # noqa: BLE001 - auth down: the processor still polls
            log.warning("announce_skipped", extra={"group_id": group["_id"], "error": repr(exc)})
            self.metrics.announce_failures.inc()
            return
        self.announcer.announce(pool, group)

    def promote_ready(self) -> int:
        now = self.clock()
        moved = 0
        for group in self.store.open_groups():
            if core.is_ready(now, group["window_end"], group.get("close_at", group["window_end"])
                             - group["window_end"], len(group.get("contributors") or ()),
                             group.get("min_contributors")):
                if self.make_ready(group["_id"]) is not None:
                    moved += 1
        return moved

    def expire_leases(self) -> int:
        now = self.clock()
        moved = 0
        for group in self.store.expired_leases(now):
            target, count = core.after_lease_expiry(int(group.get("lease_expiries") or 0),
                                                    self.lease_max_expiries)
            updated = self.store.expire_lease(group["_id"], group.get("lease_id"), target, count, now)
            if updated is None:
                continue  # a result arrived or another process expired it first
            moved += 1
            self.metrics.lease_expiries.labels(target).inc()
            log.warning("lease_expired", extra={"group_id": group["_id"], "pool_id": group["pool_id"],
                                                "lease_expiries": count, "status": target})
            self.publish_changed(updated)
            if target == core.READY:
                self._announce(updated)
        return moved

    def update_gauges(self) -> None:
        for status, count in self.store.count_by_status().items():
            self.metrics.groups.labels(status).set(count)


class Ticker:
    def __init__(self, lifecycle: Lifecycle, interval: float = 1.0) -> None:
        self.lifecycle = lifecycle
        self.interval = interval
        self._stop = threading.Event()

    def tick(self) -> None:
        steps = (self.lifecycle.promote_ready, self.lifecycle.expire_leases, self.lifecycle.update_gauges)
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - one bad tick (MongoDB blip) must not stop the loop
                log.exception("tick_failed", extra={"step": step.__name__})

    def run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="ticker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
