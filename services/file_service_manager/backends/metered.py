"""A backend wrapped with its metrics: bytes written, failed operations and latency, by backend id."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from ..ports import Download, StorageBackend, Written

T = TypeVar("T")


class StorageMetrics:
    """The per-backend series (label ``backend`` = descriptor id: one per distinct location, bounded)."""

    def __init__(self, bytes_written: Any, errors: Any, latency: Any) -> None:
        self.bytes_written, self.errors, self.latency = bytes_written, errors, latency


class Metered:
    """``ports.StorageBackend`` by delegation; every call timed, every failure counted."""

    def __init__(self, inner: StorageBackend, metrics: StorageMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self.kind = inner.kind
        self.descriptor = inner.descriptor
        self.label = str(inner.descriptor.get("id", inner.kind))

    def _timed(self, op: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        except Exception:
            self.metrics.errors.labels(self.label, op).inc()
            raise
        finally:
            self.metrics.latency.labels(self.label, op).observe(time.perf_counter() - started)

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> Written:
        written = self._timed("write", lambda: self.inner.write(key, pieces, content_type=content_type, name=name))
        self.metrics.bytes_written.labels(self.label).inc(written[0])
        return written

    def open(self, key: str) -> Download | None:
        return self._timed("open", lambda: self.inner.open(key))

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        return self._timed("read", lambda: self.inner.read_range(key, start, length))

    def exists(self, key: str) -> bool:
        return self._timed("exists", lambda: self.inner.exists(key))

    def delete(self, key: str) -> bool:
        return self._timed("delete", lambda: self.inner.delete(key))

    def probe(self) -> bool:
        return self._timed("probe", self.inner.probe)

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        return self._timed("sweep", lambda: self.inner.leftovers(older_than, remove=remove))
