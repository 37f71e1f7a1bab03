"""The S3 backend: objects ``<prefix><key>`` in one bucket of any S3-compatible endpoint.

Writes stream: pieces gather in one part buffer of ``part_size`` bytes (S3's
minimum part is 5 MiB; default 8 MiB), and each full buffer is sent as a
multipart part, so a 50 MB file never sits in memory. A file smaller than one
part is a single PUT. A writer that fails half-way aborts the multipart
upload: no object becomes visible (S3 shows an object only once the upload
is completed). Reads are ranged GETs streamed from the response body.

A prestore (``prestoring``) writes a multipart upload the same way, even a small
file (one part), but does not complete it: ``prestore_write`` answers the upload
id, and the StoreUpload, once it has compared size and sha256 with the upload's,
completes it (``prestore_adopt``: the object appears whole, at once). A crashed
prestore's upload is one never completed, which ``leftovers`` aborts once it
was initiated longer ago than the sweeper's grace.

The client is bounded: connect/read timeouts, a few retries in standard mode,
and a connection pool sized for the store consumers and download threads.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..ports import BackendError, Written
from . import streams

MIN_PART = 5 * 1024 * 1024  # S3 refuses smaller parts (except the last)
PART = 8 * 1024 * 1024  # bytes buffered per part: the memory one upload holds
# How this service names objects (after the prefix): a file id -- file_uploader's upload id, a
# uuid4 hex, or a batch item's ``{upload_id}-{n:04d}``. Only such multipart uploads are swept.
OUR_KEY = re.compile(r"[0-9a-f]{32}(-[0-9]{4})?")
MAX_PARTS = 10_000  # S3's limit: 80 GB at 8 MiB parts, far above the 50 MB file limit


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _no_upload(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchUpload", "404", "NotFound")


class S3Download:
    """An object opened for reading: ``length`` from HEAD; each seek starts a ranged GET on the next read."""

    def __init__(self, client: Any, bucket: str, key: str, length: int) -> None:
        self.client, self.bucket, self.key, self.length = client, bucket, key, length
        self.pos = 0
        self.body: Any = None

    def seek(self, pos: int) -> int:
        if self.body is not None and pos != self.pos:
            self.body.close()
            self.body = None
        self.pos = pos
        return pos

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.length:
            return b""
        if self.body is None:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-")
            self.body = answer["Body"]
        data: bytes = self.body.read() if size < 0 else self.body.read(size)
        self.pos += len(data)
        return data

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None


class _Counted:
    """``pieces`` passed through, their size and sha256 taken on the way."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = pieces
        self.size = 0
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            self.digest.update(piece)
            self.size += len(piece)
            yield piece

    def written(self) -> Written:
        return Written(self.size, self.digest.hexdigest())


class S3Backend:
    kind = "s3"

    def __init__(self, *, endpoint_url: str | None, bucket: str, access_key_id: str, secret_access_key: str,
                 prefix: str = "", region: str | None = None, part_size: int = PART, pool: int = 24,
                 descriptor: dict[str, Any] | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = max(MIN_PART, part_size)
        self.descriptor = descriptor or {"backend": "s3", "endpoint_url": endpoint_url, "bucket": bucket,
                                         "prefix": prefix, "region": region}
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                          max_pool_connections=pool, s3={"addressing_style": "path"}))

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> Written:
        name = self.object_key(key)
        counted = _Counted(pieces)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for block in self._blocks(counted):
                if upload_id is None and len(block) < self.part_size:  # smaller than one part: a single PUT
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=block, ContentType=content_type)
                    return counted.written()
                if upload_id is None:
                    upload_id = self.client.create_multipart_upload(
                        Bucket=self.bucket, Key=name, ContentType=content_type)["UploadId"]
                parts.append(self._part(name, upload_id, len(parts) + 1, block))
                del block  # not held while the next block fills
            if upload_id is None:  # nothing at all: an empty object
                self.client.put_object(Bucket=self.bucket, Key=name, Body=b"", ContentType=content_type)
                return counted.written()
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                except (BotoCoreError, ClientError):
                    pass  # a bucket lifecycle rule should expire abandoned uploads (docs/OPERATIONS.md)
            raise
        return counted.written()

    def _blocks(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """``pieces`` regrouped into ``part_size`` blocks, the last one shorter (none for no bytes);
        at most part_size + one piece (a cache chunk) held at a time."""
        buffer = bytearray()
        for piece in pieces:
            buffer += piece
            if len(buffer) >= self.part_size:
                block = bytes(buffer)
                buffer.clear()  # before the yield: the caller's part upload runs with one copy held
                yield block
                del block
        if buffer:
            yield bytes(buffer)

    # --- prestores (``ports.Prestorable``; see the module's docstring) ------------------
    def prestore_write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
                       tag: str) -> tuple[Written, str]:
        name = self.object_key(key)
        counted = _Counted(pieces)
        parts = 0
        upload_id: str = self.client.create_multipart_upload(Bucket=self.bucket, Key=name,
                                                             ContentType=content_type)["UploadId"]
        try:
            for block in self._blocks(counted):  # the last part may be smaller than MIN_PART
                parts += 1
                self._part(name, upload_id, parts, block)
                del block  # not held while the next block fills
            if not parts:  # no bytes: one empty part
                self._part(name, upload_id, 1, b"")
        except BaseException:
            # The upload id is this prestore's alone (nobody else knows it): aborted even when
            # the lease is lost by then.
            self._abort(name, upload_id)
            raise
        return counted.written(), upload_id

    def prestore_clear(self, key: str, ref: str, *, owned: bool) -> None:
        # Only the multipart upload: a prestore never writes the object itself.
        if ref:
            self._abort(self.object_key(key), ref)

    def prestore_adopt(self, key: str, ref: str, size: int) -> bool:
        name = self.object_key(key)
        parts: list[dict[str, Any]] = []
        marker = 0
        try:
            while True:  # bounded: MAX_PARTS parts, 1,000 a page
                page = self.client.list_parts(Bucket=self.bucket, Key=name, UploadId=ref,
                                              PartNumberMarker=marker, MaxParts=1000)
                parts += [{"ETag": p["ETag"], "PartNumber": p["PartNumber"], "Size": p["Size"]}
                          for p in page.get("Parts", [])]
                if not page.get("IsTruncated") or len(parts) >= MAX_PARTS:
                    break
                marker = int(page["NextPartNumberMarker"])
            if sum(p["Size"] for p in parts) != size \
                    or [p["PartNumber"] for p in parts] != list(range(1, len(parts) + 1)):
                self._abort(name, ref)  # not what the prestore recorded: written again
                return False
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=ref,
                MultipartUpload={"Parts": [{"ETag": p["ETag"], "PartNumber": p["PartNumber"]} for p in parts]})
        except ClientError as exc:
            if _no_upload(exc):
                return False  # aborted by the sweeper, or completed by an earlier attempt
            raise
        return True

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            pass  # gone already, or left to the sweeper (``leftovers``) and the bucket's lifecycle rule

    def _part(self, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise BackendError(f"s3: more than {MAX_PARTS} parts")
        answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number,
                                         Body=data)
        return {"ETag": answer["ETag"], "PartNumber": number}

    def open(self, key: str) -> S3Download | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return S3Download(self.client, self.bucket, self.object_key(key), int(head["ContentLength"]))

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        return streams.read_range(self.open(key), start, length)

    def exists(self, key: str) -> bool:
        return self.open(key) is not None

    def delete(self, key: str) -> bool:
        existed = self.exists(key)
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))  # idempotent in S3
        return existed

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        """Multipart uploads of ours begun before the cutoff and never completed (a writer killed
        before it could abort); at most 1,000 per pass (one listing page).

        Ours: under the storage's prefix, and named as this service names objects (a file id,
        ``OUR_KEY``). A pool's bucket may be shared with its owner's own tools, whose long
        multipart uploads (backups) must never be aborted here -- with an empty prefix only the
        name tells them apart. (A bucket lifecycle rule AbortIncompleteMultipartUpload is the
        operator's catch-all; docs/OPERATIONS.md.)"""
        answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix, MaxUploads=1000)
        found: list[str] = []
        for upload in answer.get("Uploads", []):
            if upload["Initiated"] >= older_than or not OUR_KEY.fullmatch(upload["Key"][len(self.prefix):]):
                continue
            found.append(upload["Key"])
            if remove:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                except ClientError as exc:
                    if not _missing(exc) and exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                        raise
        return found

    def probe(self) -> bool:
        key = f".probe-{uuid.uuid4().hex}"
        payload = b"file-dropbox storage probe"
        where = f"s3 bucket {self.bucket!r}"
        try:
            if streams.read_back(self, key, payload) != payload:
                raise BackendError(f"{where}: the probe object read back wrong")
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except BackendError:
            raise
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise BackendError(f"{where}: {error.get('Code', '?')}: {error.get('Message', '')}"[:300]) from exc
        except BotoCoreError as exc:
            raise BackendError(f"{where}: {type(exc).__name__}: {exc}"[:300]) from exc
        return True
