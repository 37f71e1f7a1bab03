"""Each storage backend's health: a write-read-delete probe, for /ready, a gauge and the alert.

Which backends: every distinct one in use (``Storages.in_use``, at most MAX_IN_USE = 64): the
default (DEFAULT_STORAGE), every pool's storage and old locations files still live in (the
storage catalog), the default first.

Readiness: only the default decides it (``checks``): files without a pool, and pools without a
storage of their own, cannot be stored without it. A pool's own backend that fails is reported in
/ready's body (``reports``: its ``storage:<id>`` check false, named under ``degraded``) and in the
gauge, but the replica stays in the load balancer: taking every replica out for one pool's broken
bucket would stop every other pool's uploads and downloads too.

A probe writes an object, so it is not run on every /ready call (the readiness probe asks every
10 s from every replica): each result is kept ``ttl`` seconds (STORAGE_PROBE_SECONDS), and the
periodic pass (``run_all``) probes every backend in use, each in a thread of its own (at most one
probe per backend at a time: at most MAX_IN_USE threads), so the gauge ``storage_backend_up``
stays current even when nobody asks /ready and one slow backend delays no other. /ready answers
from these results (it never waits on a pool's backend); only the default, when its result is
older than ``ttl`` and no probe of it is running, is probed by /ready itself. A probe still
running after ``ttl`` counts as failed (a hung mount, an endpoint that never answers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from .backends import MAX_IN_USE, Storages
from .ports import StorageBackend

log = logging.getLogger(__name__)

MAX_REASON = 300  # characters of a probe's failure reason kept and logged


class Result(NamedTuple):
    when: float
    ok: bool
    reason: str
    kind: str


class StorageProbes:
    def __init__(self, storages: Storages, up_gauge: Any, ttl: float,
                 clock: Callable[[], float] = time.monotonic, limit: int = MAX_IN_USE) -> None:
        self.storages = storages
        self.up = up_gauge
        self.ttl = ttl
        self.clock = clock
        self.limit = limit
        self.default_id = storages.default_spec.id
        # Readiness threads, the periodic pass and its probe threads share these; bound: one entry
        # per backend in use (at most ``limit``; the others are dropped by each pass).
        self._lock = threading.Lock()
        self.results: dict[str, Result] = {}
        self._running: dict[str, float] = {}  # id -> when its probe started

    def checks(self) -> dict[str, Callable[[], bool]]:
        """The /ready check that decides readiness: the default backend's, ``storage:<id>``."""
        return {f"storage:{self.default_id}": partial(self.check, self.default_id)}

    def reports(self) -> dict[str, bool]:
        """Every other backend's last result, for /ready's body (never probes: answers at once)."""
        now = self.clock()
        with self._lock:
            return {f"storage:{spec_id}": self._ok(spec_id, found, now)
                    for spec_id, found in sorted(self.results.items()) if spec_id != self.default_id}

    def _ok(self, spec_id: str, found: Result, now: float) -> bool:
        started = self._running.get(spec_id)
        return found.ok and not (started is not None and now - started > self.ttl)

    def check(self, spec_id: str) -> bool:
        """A backend's last result while fresh (or while a probe of it runs); else probed now."""
        now = self.clock()
        with self._lock:
            found = self.results.get(spec_id)
            started = self._running.get(spec_id)
            if found is not None and (now - found.when < self.ttl or started is not None):
                return self._ok(spec_id, found, now)
            if started is not None:  # its first probe is still running: not known to work yet
                return False
            self._running[spec_id] = now
        # in_use(1) is the default alone (no catalog read); another backend is looked up among all.
        backend = None
        try:
            backend = self.storages.in_use(1 if spec_id == self.default_id else self.limit).get(spec_id)
        finally:
            if backend is None:  # not in use (or the lookup failed): nothing runs for it
                with self._lock:
                    self._running.pop(spec_id, None)
        return self._probe(spec_id, backend) if backend is not None else False

    def _probe(self, spec_id: str, backend: StorageBackend) -> bool:
        """Run one probe (its start already noted in ``_running``), keep and log its result."""
        try:
            ok, reason = bool(backend.probe()), ""
        except Exception as exc:  # noqa: BLE001 - any failure is the probe's answer
            ok, reason = False, str(exc)[:MAX_REASON]
        with self._lock:
            self._running.pop(spec_id, None)
            before = self.results.get(spec_id)
            self.results[spec_id] = Result(self.clock(), ok, reason, backend.kind)
        self.up.labels(spec_id, backend.kind, self._role(spec_id)).set(1 if ok else 0)
        if before is None or before.ok != ok:  # log changes, not every probe
            if ok:
                log.info("storage backend healthy", extra={"storage": spec_id})
            else:
                log.warning("storage backend failed its probe", extra={"storage": spec_id, "reason": reason})
        return ok

    def run_all(self, wait: float | None = None) -> dict[str, bool]:
        """The periodic pass: probe every backend in use, each in its own thread (one whose last
        probe still runs is not probed again; after ``ttl`` it counts as down). Waits at most
        ``wait`` seconds (default ``ttl``) and answers the probes that finished by then."""
        backends = self.storages.in_use(self.limit)
        now = self.clock()
        threads: dict[str, threading.Thread] = {}
        with self._lock:
            for spec_id in [k for k in self.results if k not in backends]:  # no longer in use (or over the bound)
                gone = self.results.pop(spec_id)
                self._forget_gauge(spec_id, gone.kind)
            for spec_id, backend in backends.items():
                started = self._running.get(spec_id)
                if started is not None:
                    if now - started > self.ttl:  # hung: down until it returns
                        self.up.labels(spec_id, backend.kind, self._role(spec_id)).set(0)
                    continue
                self._running[spec_id] = now
                threads[spec_id] = threading.Thread(target=self._probe, args=(spec_id, backend),
                                                    name=f"storage-probe-{spec_id}", daemon=True)
        for thread in threads.values():
            thread.start()
        deadline = time.monotonic() + (self.ttl if wait is None else wait)
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return {spec_id: self.results[spec_id].ok for spec_id, thread in threads.items()
                    if not thread.is_alive() and spec_id in self.results}

    def _role(self, spec_id: str) -> str:
        return "default" if spec_id == self.default_id else "pool"

    def _forget_gauge(self, spec_id: str, kind: str) -> None:
        try:
            self.up.remove(spec_id, kind, self._role(spec_id))
        except KeyError:
            pass
