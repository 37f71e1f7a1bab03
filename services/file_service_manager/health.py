"""Each configured storage backend's health: a write-read-delete probe, for /ready, a gauge and the alert.

A probe writes an object, so it is not run on every /ready call (the readiness probe
asks every 10 s from every replica): the result is kept ``ttl`` seconds
(STORAGE_PROBE_SECONDS), and the service's periodic pass refreshes it so the gauge
``storage_backend_up`` stays current even when nobody asks /ready.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from .backends import Storages

log = logging.getLogger(__name__)

MAX_REASON = 300  # characters of a probe's failure reason kept and logged


class StorageProbes:
    def __init__(self, storages: Storages, up_gauge: Any, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storages = storages
        self.up = up_gauge
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()  # readiness threads and the periodic pass share the results
        self.results: dict[str, tuple[float, bool, str]] = {}  # id -> (when, ok, reason): one per backend

    def checks(self) -> dict[str, Callable[[], bool]]:
        """One /ready check per configured backend, named ``storage:<id>``."""
        return {f"storage:{spec_id}": partial(self.check, spec_id) for spec_id in self.storages.specs}

    def check(self, spec_id: str) -> bool:
        with self._lock:
            found = self.results.get(spec_id)
        if found is not None and self.clock() - found[0] < self.ttl:
            return found[1]
        return self.probe(spec_id)

    def probe(self, spec_id: str) -> bool:
        backend = self.storages.configured()[spec_id]
        try:
            ok, reason = bool(backend.probe()), ""
        except Exception as exc:  # noqa: BLE001 - any failure is the probe's answer
            ok, reason = False, str(exc)[:MAX_REASON]
        with self._lock:
            before = self.results.get(spec_id)
            self.results[spec_id] = (self.clock(), ok, reason)
        self.up.labels(spec_id, backend.kind).set(1 if ok else 0)
        if before is None or before[1] != ok:  # log changes, not every probe
            if ok:
                log.info("storage backend healthy", extra={"storage": spec_id})
            else:
                log.warning("storage backend failed its probe", extra={"storage": spec_id, "reason": reason})
        return ok

    def run_all(self) -> dict[str, bool]:
        """The periodic pass: probe every configured backend now."""
        return {spec_id: self.probe(spec_id) for spec_id in list(self.storages.specs)}
