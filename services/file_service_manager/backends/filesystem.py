"""The filesystem backend: files under one root directory, never outside it.

A key (a file_id) becomes ``root/<first two characters>/<key>`` (two-character
fan-out keeps directories small). Keys are checked against a strict pattern
and the resolved path must stay under the resolved root, so neither ``..``
nor a symlink planted under the root lets a write or a delete escape it.

A write goes to a hidden temporary name in the target directory, is fsynced,
renamed over the final name (atomic on one filesystem), and the directory is
fsynced so the rename itself survives a crash. Only then is the file
"stored"; a writer that fails half-way deletes its temporary file, and a
crash leaves only a ``.tmp`` name that ``exists``/``open`` never see.

A prestore (``prestoring``) writes the same way but stops before the rename:
``prestore_write`` leaves the fsynced temporary file (``.<key>.<lease token>.tmp``)
and the StoreUpload, once it has compared size and sha256 with the upload's,
renames it over the final name (``prestore_adopt``: the rename, then the
directory's fsync). A crashed prestore's temporary file is a ``.tmp`` leftover
like a crashed write's: ``leftovers`` removes it once its modification time
(every write moves it) is older than the sweeper's grace.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..ports import BackendError, Written
from . import streams

MAX_LEFTOVERS = 10_000  # temporary files removed per sweep pass
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # file_ids are server-made; anything else is refused
TAG = re.compile(r"[0-9a-f]{32}")  # a temporary name's tag: a uuid4's hex (a prestore's lease token)
# A prestore flushes its temporary file every this many bytes while the upload arrives (the
# prestore mostly waits for chunks meanwhile), so the fsync after the last chunk -- which the
# owner waits for -- has at most this much left to write instead of the whole file.
PRESTORE_SYNC_BYTES = 8 * 1024 * 1024


class FileDownload:
    """An open stored file: ``length`` plus the file object's seek/read/close."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.length = os.fstat(handle.fileno()).st_size

    def seek(self, pos: int) -> int:
        return self.handle.seek(pos)

    def read(self, size: int = -1) -> bytes:
        return self.handle.read(size)

    def close(self) -> None:
        self.handle.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBackend:
    kind = "filesystem"

    def __init__(self, root: str, descriptor: dict[str, Any] | None = None) -> None:
        if not os.path.isabs(root):
            raise BackendError(f"filesystem root must be an absolute path, not {root!r}")
        self.root = Path(root)
        self.descriptor = descriptor or {"backend": "filesystem", "root": root}

    def path(self, key: str) -> Path:
        """The file's path; refuses a key that is not a plain name or would leave the root."""
        if not KEY.fullmatch(key) or ".." in key:
            raise BackendError(f"refused key {key[:80]!r}: not a plain file name")
        root = self.root.resolve()
        target = (root / key[:2] / key).resolve()
        if not target.is_relative_to(root):
            raise BackendError(f"refused key {key[:80]!r}: its path leaves the root")
        return target

    def write(self, key: str, pieces: Iterable[bytes], *, content_type: str,
              name: str | None = None) -> Written:
        target = self._target(key)
        temp = target.parent / f".{key}.{uuid.uuid4().hex}.tmp"
        written = self._write_temp(temp, pieces, sync_every=0)
        try:
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)  # the rename is durable only once its directory is
        return written

    def _target(self, key: str) -> Path:
        """``key``'s path, its directory made (under the root, never outside it)."""
        target = self.path(key)
        target.parent.mkdir(exist_ok=True)  # not parents: a missing root is an error, not created
        if not target.parent.resolve().is_relative_to(self.root.resolve()):
            raise BackendError(f"refused key {key[:80]!r}: its directory leaves the root")
        return target

    @staticmethod
    def _write_temp(temp: Path, pieces: Iterable[bytes], *, sync_every: int) -> Written:
        """``pieces`` into the new file ``temp``, fsynced; a failure deletes it. ``sync_every`` > 0:
        also flushed every that many bytes (a prestore: see PRESTORE_SYNC_BYTES)."""
        digest = hashlib.sha256()
        size = unsynced = 0
        # O_EXCL|O_NOFOLLOW: never write through a file or link someone else put at this name.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    digest.update(piece)
                    size += len(piece)
                    out.write(piece)
                    unsynced += len(piece)
                    if sync_every and unsynced >= sync_every:
                        out.flush()
                        os.fdatasync(out.fileno())
                        unsynced = 0
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Written(size, digest.hexdigest())

    # --- prestores (``ports.Prestorable``; see the module's docstring) ------------------
    def _prestored(self, key: str, ref: str) -> Path | None:
        """The temporary file ``ref`` names for ``key`` (Redis says which: only a name of this
        shape in ``key``'s directory is ever touched; None for any other, which is ignored --
        the StoreUpload writes the file itself -- rather than failing every retry)."""
        match = re.fullmatch(r"\.(.+)\.([0-9a-f]{32})\.tmp", ref)
        if match is None or match.group(1) != key:
            return None
        return self.path(key).parent / ref

    def prestore_write(self, key: str, pieces: Iterable[bytes], *, content_type: str, name: str | None,
                       tag: str) -> tuple[Written, str]:
        if not TAG.fullmatch(tag):
            raise BackendError("a prestore's tag is 32 hex digits")
        temp = self._target(key).parent / f".{key}.{tag}.tmp"
        # The temporary name is this prestore's alone (its lease token): a failure deletes it
        # (``_write_temp``) even when the lease is lost by then -- nobody else knows the name.
        return self._write_temp(temp, pieces, sync_every=PRESTORE_SYNC_BYTES), temp.name

    def prestore_clear(self, key: str, ref: str, *, owned: bool) -> None:
        # Only the temporary file: the final name is never written by a prestore.
        temp = self._prestored(key, ref)
        if temp is not None:
            temp.unlink(missing_ok=True)

    def prestore_adopt(self, key: str, ref: str, size: int) -> bool:
        temp, target = self._prestored(key, ref), self.path(key)
        if temp is None:
            return False
        try:
            found = os.lstat(temp)
            if not stat.S_ISREG(found.st_mode) or found.st_size != size:
                temp.unlink(missing_ok=True)  # not what the prestore recorded: written again
                return False
            os.replace(temp, target)  # atomic: readers see no file or the whole one
        except FileNotFoundError:
            return False  # swept, or an earlier attempt of this StoreUpload renamed it already
        _fsync_dir(target.parent)  # the rename is durable only once its directory is
        return True

    def open(self, key: str) -> FileDownload | None:
        try:
            handle = open(self.path(key), "rb")  # noqa: SIM115 - the download closes it
        except FileNotFoundError:
            return None
        return FileDownload(handle)

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        return streams.read_range(self.open(key), start, length)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> bool:
        target = self.path(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(target.parent)
        return True

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        """Temporary files (``root/<xx>/.<key>.<hex>.tmp``) a killed writer left, by modification time."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        cutoff = older_than.timestamp()
        for temp in self.root.glob("*/.*.tmp"):
            if len(found) >= MAX_LEFTOVERS:
                break
            try:
                if temp.is_symlink() or not temp.is_file() or temp.stat().st_mtime >= cutoff:
                    continue
                found.append(str(temp.relative_to(self.root)))
                if remove:
                    temp.unlink()
            except FileNotFoundError:  # finished (renamed) or removed meanwhile
                continue
        return found

    def probe(self) -> bool:
        key = f"probe-{uuid.uuid4().hex}"
        payload = b"file-dropbox storage probe"
        try:
            if not self.root.is_dir():
                raise BackendError(f"filesystem root {str(self.root)!r} is not a directory")
            if streams.read_back(self, key, payload) != payload:
                raise BackendError(f"filesystem root {str(self.root)!r}: the probe file read back wrong")
        except BackendError:
            raise
        except OSError as exc:
            raise BackendError(f"filesystem root {str(self.root)!r}: {exc.strerror or exc}") from exc
        finally:
            try:
                self.delete(key)
            except OSError:
                pass
        return True
