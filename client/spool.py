"""Updates a client produced while offline, kept on disk until they go as one batch.

SPEC: "A client that was offline sends one batch holding several updates, each
with its own timestamp" — one upload whose ``items`` are byte ranges of the
file. The spool keeps every update as its own file (plus a small JSON
sidecar with its timestamp and name) under ``<directory>/<pool_id>/``, so
nothing is lost if the client process stops before it reconnects.
``build_batch`` streams them, oldest first, into one batch file (never the
whole batch in memory) and returns the matching ``items``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

COPY_BLOCK = 1024 * 1024
_POOL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class SpooledUpdate:
    path: Path
    timestamp: str
    name: str
    size: int


class OfflineSpool:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _pool_dir(self, pool_id: str) -> Path:
        # The pool id names a folder: refuse anything that could step outside the spool.
        if not isinstance(pool_id, str) or not _POOL_ID.fullmatch(pool_id):
            raise ValueError(f"not a pool id: {pool_id!r}")
        return self.directory / pool_id

    def add(self, pool_id: str, source: str | os.PathLike | bytes | BinaryIO, *, timestamp: str | None = None,
            name: str | None = None) -> SpooledUpdate:
        """Keep one update (a path, bytes or a binary file object) with its own timestamp."""
        stamp = timestamp or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        folder = self._pool_dir(pool_id)
        folder.mkdir(parents=True, exist_ok=True)
        # Sortable by arrival: the batch keeps the order the updates were produced in.
        stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        target = folder / f"{stem}.bin"
        tmp = folder / f".{stem}.partial"
        with open(tmp, "wb") as out:
            if isinstance(source, bytes):
                out.write(source)
            elif isinstance(source, str | os.PathLike):
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, COPY_BLOCK)
            else:
                shutil.copyfileobj(source, out, COPY_BLOCK)
        size = tmp.stat().st_size
        if size == 0:
            tmp.unlink()
            raise ValueError("an update must not be empty")
        if name is None:
            name = Path(source).name if isinstance(source, str | os.PathLike) else "update.bin"
        (folder / f"{stem}.json").write_text(json.dumps({"timestamp": stamp, "name": name}))
        os.replace(tmp, target)  # the .bin appears only once complete
        return SpooledUpdate(target, stamp, name, size)

    def pools(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and any(p.glob("*.bin")))

    def pending(self, pool_id: str) -> list[SpooledUpdate]:
        folder = self._pool_dir(pool_id)
        updates = []
        for path in sorted(folder.glob("*.bin")):
            meta = json.loads(path.with_suffix(".json").read_text())
            updates.append(SpooledUpdate(path, meta["timestamp"], meta["name"], path.stat().st_size))
        return updates

    def build_batch(self, updates: list[SpooledUpdate], out: BinaryIO) -> list[dict]:
        """Write ``updates`` one after another into ``out``; return SPEC's ``items``."""
        items, offset = [], 0
        for update in updates:
            with open(update.path, "rb") as src:
                shutil.copyfileobj(src, out, COPY_BLOCK)
            items.append({"timestamp": update.timestamp, "offset": offset, "length": update.size,
                          "name": update.name})
            offset += update.size
        return items

    def drop(self, updates: list[SpooledUpdate]) -> None:
        """Forget updates once their batch is accepted (``cached``) by the fleet."""
        for update in updates:
            update.path.unlink(missing_ok=True)
            update.path.with_suffix(".json").unlink(missing_ok=True)


def batches(updates: list[SpooledUpdate], max_bytes: int, max_items: int) -> list[list[SpooledUpdate]]:
    """Split pending updates into batches that respect the fleet's size and item limits."""
    out: list[list[SpooledUpdate]] = []
    current: list[SpooledUpdate] = []
    size = 0
    for update in updates:
        if current and (size + update.size > max_bytes or len(current) >= max_items):
            out.append(current)
            current, size = [], 0
        current.append(update)
        size += update.size
    if current:
        out.append(current)
    return out
