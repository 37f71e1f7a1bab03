from __future__ import annotations

import io
import tarfile

import pytest

from services.pool_aggregator.archive import ArchiveError, Member, archive_length, tar_stream


def _member(name: str, data: bytes, chunk: int = 7) -> Member:
    return Member(name=name, size=len(data), mtime=1_700_000_000,
                  chunks=lambda: (data[i:i + chunk] for i in range(0, len(data), chunk)))


def test_stream_is_a_valid_tar_of_exact_length() -> None:
    members = [_member("a.bin", b"x" * 1000), _member("b" * 150 + ".bin", b"hello"),
               _member("c", b"\0" * 512)]
    data = b"".join(tar_stream(members))
    assert len(data) == archive_length(members)
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar}
    assert got == {"a.bin": b"x" * 1000, "b" * 150 + ".bin": b"hello", "c": b"\0" * 512}


def test_members_are_opened_lazily_in_order() -> None:
    opened = []

    def member(name: str) -> Member:
        def chunks():
            opened.append(name)
            yield b"1234"
        return Member(name=name, size=4, mtime=0, chunks=chunks)

    stream = tar_stream([member("one"), member("two")])
    next(stream)  # header of "one"
    assert opened == []
    next(stream)
    assert opened == ["one"]


def test_short_member_aborts_the_stream() -> None:
    with pytest.raises(ArchiveError):
        b"".join(tar_stream([Member("x", 10, 0, lambda: [b"12345"])]))


def test_long_member_aborts_the_stream() -> None:
    with pytest.raises(ArchiveError):
        b"".join(tar_stream([Member("x", 3, 0, lambda: [b"12345"])]))


def test_empty_archive() -> None:
    data = b"".join(tar_stream([]))
    assert len(data) == archive_length([]) == tarfile.RECORDSIZE
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        assert list(tar) == []
