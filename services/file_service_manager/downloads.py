"""Download a stored file: who may, which bytes (Range, ETag), from memory or streamed from GridFS.

``plan_download`` decides everything and returns a ``DownloadPlan``; the route
only turns it into a response. Bytes are never held whole, except results in
the bounded hot cache (``HotFiles``), which many members download at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.common.errors import ApiError, not_found

from . import core
from .backends.streams import read_range
from .deps import Deps
from .ports import Download


@dataclass
class DownloadPlan:
    status: int  # 200, 206 or 304
    headers: dict[str, str]
    content_type: str = "application/octet-stream"
    memory: bytes | None = None  # the bytes to send from the hot cache (a whole file or a range slice)
    stream: Iterator[bytes] | None = None  # or the GridFS stream of them
    extra: dict[str, str] = field(default_factory=dict)


class RangeRefused(ApiError):
    """416, with the Content-Range the client needs (``bytes */size``)."""

    def __init__(self, size: int) -> None:
        super().__init__(416, "range_not_satisfiable", f"the file has {size} bytes")
        self.content_range = f"bytes */{size}"


def plan_download(deps: Deps, file_id: str, who: core.Caller, range_header: str | None,
                  if_none_match: str | None) -> DownloadPlan:
    record = deps.index.record(file_id)
    # Unknown, not stored yet, or not yours: the same 404, so ids cannot be probed.
    if record is None or record.get("status") != "uploaded_successfully" or not core.can_download(record, who):
        raise not_found("no such file")
    grid = deps.storage.for_record(record).open(file_id)
    if grid is None:
        raise not_found("no such file")
    size, sha256 = grid.length, record.get("sha256") or ""
    headers = {"ETag": core.etag(sha256), "Accept-Ranges": "bytes",
               "Content-Disposition": core.content_disposition(record.get("file_name") or file_id),
               "Cache-Control": "private, max-age=0"}
    if core.etag_matches(if_none_match, sha256):
        grid.close()
        deps.metrics.downloads.labels("304").inc()
        return DownloadPlan(304, headers)
    try:
        span = core.parse_range(range_header, size)
    except core.RangeNotSatisfiable:
        grid.close()
        deps.metrics.downloads.labels("416").inc()
        raise RangeRefused(size) from None
    start, end = span if span is not None else (0, size - 1)
    length = max(0, end - start + 1)
    plan = DownloadPlan(206 if span is not None else 200, headers, core.content_type(record.get("content_type")))
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    cached = _hot(deps, record, grid, file_id, size, sha256)
    if cached is not None:
        grid.close()
        deps.metrics.bytes_served.inc(length)
        # A whole bytes object is shared, not copied; a range is a bounded slice copy.
        plan.memory = cached if length == size else cached[start:start + length]
    else:
        plan.stream = _stream(deps, grid, start, length)
    deps.metrics.downloads.labels(str(plan.status)).inc()
    deps.audit.record("downloaded", actor=who.actor, file_id=file_id, pool_id=record.get("pool_id"),
                      size=length, sha256=sha256, range=headers.get("Content-Range"))
    return plan


def _hot(deps: Deps, record: dict[str, object], grid: Download, file_id: str, size: int,
         sha256: str) -> bytes | None:
    """A result's bytes from the hot cache (loaded once from GridFS), or None to stream."""
    if record.get("kind") != "result" or not sha256:
        return None

    def load_whole() -> bytes | None:
        grid.seek(0)
        data = grid.read()
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    cached = deps.hot.get_or_load(file_id, size, load_whole)
    deps.metrics.hot_reads.labels("memory" if cached is not None else "gridfs").inc()
    return cached


def _stream(deps: Deps, grid: Download, start: int, length: int) -> Iterator[bytes]:
    # download_piece: bytes per backend read, the memory one download holds.
    for data in read_range(grid, start, length, deps.settings.download_piece):
        deps.metrics.bytes_served.inc(len(data))
        yield data
