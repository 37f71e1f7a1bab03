from __future__ import annotations

import pytest

from examples.processor.mean import BadArray, MeanAccumulator, decode, encode, mean_of_arrays


def test_elementwise_mean() -> None:
    out = mean_of_arrays([encode([1.0, 2.0, 3.0]), encode([3.0, 4.0, 5.0]), encode([2.0, 0.0, -2.0])])
    assert decode(out) == [2.0, 2.0, 2.0]


def test_little_endian_wire_format() -> None:
    assert encode([1.0]) == b"\x00\x00\x00\x00\x00\x00\xf0\x3f"


def test_chunk_boundaries_do_not_matter() -> None:
    data = encode([float(i) for i in range(100)])
    acc = MeanAccumulator()
    acc.add(data[i:i + 5] for i in range(0, len(data), 5))  # 5-byte chunks split every float
    acc.add([encode([1.0] * 100)])
    assert decode(acc.result_bytes()) == [(i + 1.0) / 2 for i in range(100)]


def test_different_lengths_use_the_common_prefix() -> None:
    acc = MeanAccumulator()
    acc.add([encode([1.0, 1.0, 1.0, 9.0])])
    acc.add([encode([3.0, 3.0])])
    assert acc.lengths_differ
    assert decode(acc.result_bytes()) == [2.0, 2.0]


@pytest.mark.parametrize("bad", [b"", b"1234567"])
def test_not_an_array_is_refused(bad: bytes) -> None:
    with pytest.raises(BadArray):
        MeanAccumulator().add([bad])


def test_nothing_to_average() -> None:
    with pytest.raises(BadArray):
        mean_of_arrays([])
