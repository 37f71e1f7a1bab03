"""What every backend shares: reading a range of an open object as a bounded stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..ports import Download

PIECE = 256 * 1024  # bytes per read: the memory one range stream holds at a time


def read_range(download: Download | None, start: int, length: int, piece: int = PIECE) -> Iterator[bytes]:
    """``length`` bytes from ``start`` of an open object, ``piece`` at a time; closes it."""
    if download is None:
        raise FileNotFoundError("no such object")
    try:
        download.seek(start)
        left = length
        while left > 0:
            data = download.read(min(piece, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        download.close()


def read_back(backend: Any, key: str, payload: bytes) -> bytes:
    """Write ``payload`` under ``key`` and read it back whole: the write-read half of a probe."""
    backend.write(key, [payload], content_type="application/octet-stream")
    found = backend.open(key)
    if found is None:
        return b""
    try:
        data: bytes = found.read()
        return data
    finally:
        found.close()
