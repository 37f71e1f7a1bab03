"""The processor's math, pure: the element-wise mean of little-endian float64 arrays.

Inputs arrive as byte chunks (straight from the tar stream) with arbitrary
boundaries, so the accumulator keeps the odd bytes between chunks and never
needs a whole file in memory: only the running sums (one float per element).

Arrays of different lengths: the mean is taken over the common prefix (the
shortest array's length); the caller is told via ``lengths_differ``.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable

ITEM = 8  # bytes per float64


class BadArray(ValueError):
    """An input that is not a float64 array (its size is not a multiple of 8, or it is empty)."""


def _floats(data: bytes) -> array:
    values = array("d")
    values.frombytes(data)
    if sys.byteorder == "big":  # the wire format is little-endian
        values.byteswap()
    return values


class MeanAccumulator:
    def __init__(self) -> None:
        self.sums = array("d")
        self.count = 0
        self.min_len: int | None = None
        self.max_len = 0

    def add(self, chunks: Iterable[bytes]) -> int:
        """Add one array given as byte chunks; returns its element count."""
        position = 0
        rest = b""
        for chunk in chunks:
            data = rest + chunk
            usable = len(data) - len(data) % ITEM
            rest = data[usable:]
            values = _floats(data[:usable])
            grow = position + len(values) - len(self.sums)
            if grow > 0:
                self.sums.extend(array("d", bytes(grow * ITEM)))
            sums = self.sums
            for i, value in enumerate(values, position):
                sums[i] += value
            position += len(values)
        if rest:
            raise BadArray(f"array size is not a multiple of {ITEM} bytes")
        if position == 0:
            raise BadArray("empty array")
        self.count += 1
        self.min_len = position if self.min_len is None else min(self.min_len, position)
        self.max_len = max(self.max_len, position)
        return position

    @property
    def lengths_differ(self) -> bool:
        return self.min_len is not None and self.min_len != self.max_len

    def mean(self) -> array:
        if not self.count or self.min_len is None:
            raise BadArray("no arrays to average")
        return array("d", (self.sums[i] / self.count for i in range(self.min_len)))

    def result_bytes(self) -> bytes:
        values = self.mean()
        if sys.byteorder == "big":
            values.byteswap()
        return values.tobytes()


def mean_of_arrays(arrays: Iterable[bytes]) -> bytes:
    """The element-wise mean (common prefix) of float64 arrays, as little-endian bytes."""
    acc = MeanAccumulator()
    for data in arrays:
        acc.add([data])
    return acc.result_bytes()


def encode(values: Iterable[float]) -> bytes:
    """Values as the wire format (what a client sends)."""
    out = array("d", values)
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def decode(data: bytes) -> list[float]:
    if len(data) % ITEM:
        raise BadArray(f"array size is not a multiple of {ITEM} bytes")
    return list(_floats(data))
