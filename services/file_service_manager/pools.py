"""Where a pool's files go (SPEC "Storage backends"): its ``storage``, asked of auth and kept briefly.

auth's internal pool route answers the storage with its secrets in clear; the parsed
``StorageSpec`` keeps them out of every repr, and nothing here logs it. Each answer is reused
for ``ttl`` seconds (POOL_STORAGE_CACHE_SECONDS): a store does not ask auth for every file, and a
PATCHed storage takes effect for new files within ``ttl``. A pool auth does not know (deleted)
stores to the default. auth unreachable: the pool's last known storage if there is one (however
old), else ``AuthUnavailable``: the store fails and is retried (never written to a guessed backend).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from services.common import poolstorage
from services.common.authclient import AuthUnavailable
from services.common.errors import ShownToUsers

from .backends import BackendError, StorageSpec, parse_spec
from .ports import PoolDirectory

MAX_POOLS = 1024  # pools whose storage is kept at once; the least recently asked goes first


class PoolStorageInvalid(ShownToUsers, BackendError):
    """The pool's storage, as auth answered it, cannot be used (auth checked it: a newer rule here)."""


class PoolStorage:
    def __init__(self, auth: PoolDirectory, ttl: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic, roots: tuple[str, ...] = ()) -> None:
        self.auth = auth
        self.roots = roots  # FILESYSTEM_ROOTS: checked again here, before any file is written
        self.ttl = max(0.0, ttl)
        self.clock = clock
        self._lock = threading.Lock()  # store consumers ask at once
        self._cache: OrderedDict[str, tuple[float, StorageSpec | None]] = OrderedDict()

    def spec_for(self, pool_id: str | None) -> StorageSpec | None:
        """The pool's storage, or None for the default (no pool, or a pool auth no longer knows)."""
        if not pool_id:
            return None
        now = self.clock()
        with self._lock:
            found = self._cache.get(pool_id)
            if found is not None and now - found[0] < self.ttl:
                self._cache.move_to_end(pool_id)
                return found[1]
        try:
            doc = self.auth.pool(pool_id)  # outside the lock: one slow answer does not stall other pools
        except AuthUnavailable:
            if found is not None:  # auth away for a while: the pool's last known storage, not a guess
                return found[1]
            raise
        spec: StorageSpec | None = None
        if doc is not None:
            try:
                spec = parse_spec(doc.get("storage") or {"backend": "gridfs"})
                if spec.backend == "filesystem" and not poolstorage.under_roots(spec.root or "", self.roots):
                    raise BackendError("filesystem root is not under a directory this fleet allows (FILESYSTEM_ROOTS)")
            except BackendError as exc:  # the message names fields, never values
                raise PoolStorageInvalid(f"the pool's storage cannot be used: {exc}") from None
        with self._lock:
            self._cache[pool_id] = (now, spec)
            self._cache.move_to_end(pool_id)
            while len(self._cache) > MAX_POOLS:
                self._cache.popitem(last=False)
        return spec

    def forget(self, pool_id: str) -> None:
        with self._lock:
            self._cache.pop(pool_id, None)
