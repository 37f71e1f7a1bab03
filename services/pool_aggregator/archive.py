"""One tar stream of a group's files, produced on the fly.

The archive is never built in memory or on disk: each member's header comes
from ``tarfile.TarInfo.tobuf`` (tarfile's own encoding, PAX for long names),
its bytes are relayed chunk by chunk from file_service_manager as they
arrive, then padded to the 512-byte block. A tarfile writer (``mode="w|"``)
would need the whole member before returning, so the framing is done here
with tarfile's pieces instead.

Because every member's size is known beforehand, the exact archive length is
known too (``archive_length``) and is sent as Content-Length: a stream cut
short by a failing member is then detectable by any HTTP client, instead of
looking like a valid, shorter archive.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tar archives are padded to whole records


class ArchiveError(RuntimeError):
    """A member could not be relayed as promised (missing, or not the announced size)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    mtime: float
    chunks: Callable[[], Iterable[bytes]]  # opened only when the member's turn comes


def _header(member: Member) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mtime = int(member.mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> int:
    return (-size) % BLOCK


def archive_length(members: Iterable[Member]) -> int:
    total = 0
    for member in members:
        total += len(_header(member)) + member.size + _padding(member.size)
    total += 2 * BLOCK  # end-of-archive marker
    return total + (-total) % RECORD


def tar_stream(members: Iterable[Member]) -> Iterator[bytes]:
    total = 0
    for member in members:
        header = _header(member)
        yield header
        total += len(header)
        sent = 0
        source = member.chunks()
        try:
            for chunk in source:
                if not chunk:
                    continue
                if sent + len(chunk) > member.size:
                    raise ArchiveError(f"{member.name}: more bytes than its recorded size {member.size}")
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if sent != member.size:
            raise ArchiveError(f"{member.name}: got {sent} bytes, expected {member.size}")
        pad = _padding(member.size)
        if pad:
            yield b"\0" * pad
        total += member.size + pad
    end = 2 * BLOCK
    end += (-(total + end)) % RECORD
    yield b"\0" * end
