"""Storage backends: where a file's bytes live (SPEC "Storage backends").

A storage spec is SPEC's JSON (``{"backend": "gridfs"|"filesystem"|"s3", ...}``).
``parse_spec`` checks it (never trusted: types, lengths, absolute roots, URLs);
``StorageSpec.descriptor`` is its non-secret part with a stable ``id`` (a hash
of the location, never of the credentials): that is what a file record keeps,
so a file is read and deleted where it was written even after the default or
a pool's storage changes. ``build`` makes the backend (``ports.StorageBackend``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.common.secretbox import SecretBox, SecretError

from ..ports import BackendError, Catalog, StorageBackend

__all__ = ["LEGACY", "MAX_IN_USE", "BackendError", "Broken", "StorageSpec", "Storages", "build", "parse_spec",
           "storages_for"]

log = logging.getLogger(__name__)

KINDS = ("gridfs", "filesystem", "s3")
MAX_FIELD = 1024  # characters of any one spec field (a root, a URL, a key id)
SECRET_FIELDS = ("access_key_id", "secret_access_key")
MAX_IN_USE = 64  # backends the health probe and the sweeper look at per pass (Storages.in_use)


@dataclass(frozen=True)
class StorageSpec:
    backend: str
    bucket: str | None = None
    root: str | None = None
    endpoint_url: str | None = None
    prefix: str = ""
    region: str | None = None
    # Credentials: never in a repr (a settings object or a spec printed in a traceback or log).
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def location(self) -> dict[str, Any]:
        """Where the bytes are, without credentials."""
        if self.backend == "gridfs":
            return {"backend": "gridfs", "bucket": self.bucket or "fs"}
        if self.backend == "filesystem":
            return {"backend": "filesystem", "root": self.root}
        return {"backend": "s3", "endpoint_url": self.endpoint_url, "bucket": self.bucket,
                "prefix": self.prefix, "region": self.region}

    @property
    def id(self) -> str:
        canonical = json.dumps(self.location(), sort_keys=True, separators=(",", ":"))
        return f"{self.backend}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"

    def descriptor(self) -> dict[str, Any]:
        """The non-secret descriptor a file record keeps (``id`` + location)."""
        return {"id": self.id, **self.location()}

    def secrets(self) -> dict[str, str]:
        return {k: v for k in SECRET_FIELDS if (v := getattr(self, k))}


LEGACY = StorageSpec("gridfs")  # records written before backends existed: GridFS bucket "fs"


def _text(spec: Mapping[str, Any], field: str, *, required: bool = False) -> str | None:
    value = spec.get(field)
    if value is None or value == "":
        if required:
            raise BackendError(f"storage field {field!r} is required for backend {spec.get('backend')!r}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD or "\x00" in value:
        raise BackendError(f"storage field {field!r} must be a string of at most {MAX_FIELD} characters")
    return value


def parse_spec(raw: object) -> StorageSpec:
    """A checked ``StorageSpec`` from SPEC's JSON shape; ``BackendError`` says what is wrong."""
    if not isinstance(raw, Mapping):
        raise BackendError("storage must be a JSON object")
    backend = raw.get("backend")
    if backend not in KINDS:
        raise BackendError(f"storage backend must be one of {', '.join(KINDS)}")
    known = {"backend", "bucket", "root", "endpoint_url", "prefix", "region", *SECRET_FIELDS}
    unknown = sorted(str(k)[:40] for k in raw if k not in known)
    if unknown:
        raise BackendError(f"unknown storage fields: {', '.join(unknown[:10])}")
    if backend == "gridfs":
        bucket = _text(raw, "bucket")
        if bucket is not None and (not bucket.replace("_", "").replace("-", "").isalnum() or len(bucket) > 64):
            raise BackendError("gridfs bucket must be letters, digits, '-' or '_' (at most 64)")
        return StorageSpec("gridfs", bucket=bucket or "fs")
    if backend == "filesystem":
        root = _text(raw, "root", required=True) or ""
        if not os.path.isabs(root):
            raise BackendError("filesystem root must be an absolute path")
        return StorageSpec("filesystem", root=os.path.normpath(root))
    endpoint = _text(raw, "endpoint_url", required=True) or ""
    if not endpoint.startswith(("http://", "https://")):
        raise BackendError("s3 endpoint_url must be an http(s) URL")
    return StorageSpec("s3", endpoint_url=endpoint, bucket=_text(raw, "bucket", required=True),
                       prefix=_text(raw, "prefix") or "", region=_text(raw, "region"),
                       access_key_id=_text(raw, "access_key_id", required=True),
                       secret_access_key=_text(raw, "secret_access_key", required=True))


def build(spec: StorageSpec, *, db: Any = None) -> StorageBackend:
    """The backend for ``spec``; GridFS needs the service's MongoDB database."""
    if spec.backend == "gridfs":
        from .gridfs import GridFsBackend

        if db is None:
            raise BackendError("gridfs storage needs the MongoDB database")
        return GridFsBackend(db, spec.bucket or "fs", descriptor=spec.descriptor())
    if spec.backend == "filesystem":
        from .filesystem import FilesystemBackend

        return FilesystemBackend(spec.root or "", descriptor=spec.descriptor())
    from .s3 import S3Backend

    return S3Backend(endpoint_url=spec.endpoint_url, bucket=spec.bucket or "", prefix=spec.prefix,
                     region=spec.region, access_key_id=spec.access_key_id or "",
                     secret_access_key=spec.secret_access_key or "", descriptor=spec.descriptor())


class Storages:
    """The backends this service writes to and reads from, by descriptor id.

    ``default`` receives files without a pool (``DEFAULT_STORAGE``). A record names
    its backend by descriptor; one without (written before backends existed) is in
    GridFS ``fs``. Every storage (the default, each pool's) is saved in the ``catalog``
    before its first write by this process, its credentials (if any) encrypted with
    ``box`` (STORAGE_SECRETS_KEY): its files stay readable after the default moves on,
    and the health probe and the sweeper find every location in use (``in_use``), not
    only the default. Backends are built once and kept: one per distinct location.
    """

    def __init__(self, default: StorageSpec, make: Callable[[StorageSpec], StorageBackend],
                 catalog: Catalog | None = None, box: SecretBox | None = None) -> None:
        self.make = make
        self.catalog = catalog
        self.box = box
        self.default_spec = default
        self.specs: dict[str, StorageSpec] = {default.id: default}
        self.built: dict[str, StorageBackend] = {}
        self.saved: set[str] = set()
        self.pool_specs: dict[str, StorageSpec] = {}  # the latest spec (with credentials) of each pool location
        # Store consumers and request threads ask at once: one backend (one client pool) per location.
        self._lock = threading.Lock()

    def _get(self, spec: StorageSpec) -> StorageBackend:
        with self._lock:
            backend = self.built.get(spec.id)
            if backend is None:
                backend = self.built[spec.id] = self.make(spec)  # builds lazily: nothing connects here
            return backend

    def remember(self, spec: StorageSpec) -> None:
        """Save ``spec`` in the catalog (credentials encrypted) once per process; before its first write.

        A storage with credentials cannot be written without it (its files could not be read again).
        One without only needs it to be found by the probe and the sweeper: a catalog that cannot be
        reached is logged, the write goes on, and the next write tries again."""
        if spec.id in self.saved:
            return
        if not spec.secrets():
            if self.catalog is None:
                self.saved.add(spec.id)
                return
            try:
                self.catalog.save(spec.id, spec.descriptor(), {})
            except Exception as exc:  # noqa: BLE001 - the write does not depend on it
                log.warning("storage not saved in the catalog", extra={"storage": spec.id,
                                                                       "reason": type(exc).__name__})
                return
            self.saved.add(spec.id)
            return
        if self.catalog is None or self.box is None:
            raise BackendError("STORAGE_SECRETS_KEY is not set: storage credentials cannot be kept")
        # Saved twice by two racing threads at worst: an idempotent upsert.
        self.catalog.save(spec.id, spec.descriptor(), {k: self.box.encrypt(v) for k, v in spec.secrets().items()})
        self.saved.add(spec.id)

    def for_spec(self, spec: StorageSpec | None) -> StorageBackend:
        """The backend new files of a pool go to (``None``: the default). A location seen again with
        other credentials (a pool's secret changed) is rebuilt and saved again."""
        if spec is None:
            return self.default
        with self._lock:
            seen = self.pool_specs.get(spec.id)
            if seen != spec:  # dataclass equality compares the credentials too
                self.pool_specs[spec.id] = spec
                if seen is not None or spec.id not in self.specs:
                    self.built.pop(spec.id, None)
                self.saved.discard(spec.id)
        self.remember(spec)
        return self._get(spec)

    def trial(self, spec: StorageSpec) -> StorageBackend:
        """A one-off backend for ``spec`` (a probe before a pool is saved): neither kept nor saved."""
        return self.make(spec)

    @property
    def default(self) -> StorageBackend:
        self.remember(self.default_spec)
        return self._get(self.default_spec)

    def in_use(self, limit: int = MAX_IN_USE) -> dict[str, StorageBackend]:
        """Every distinct backend in use, at most ``limit``: the default first, then the catalog's,
        most recently saved first (every location any replica has written to: pools' storages, an
        old default), then any other this process has built (a record's backend found apart from
        the catalog). What the health probe and the sweeper look at.

        A catalog entry that cannot be opened (its credentials need another STORAGE_SECRETS_KEY)
        is a ``Broken`` backend whose probe fails with the reason; a catalog that cannot be read
        leaves the backends known here."""
        found: dict[str, StorageBackend] = {self.default_spec.id: self._get(self.default_spec)}
        for doc in self._catalogued(limit) if limit > 1 else ():
            if len(found) >= limit:
                return found
            descriptor, spec_id = doc.get("descriptor"), str(doc.get("_id"))
            if spec_id in found or not isinstance(descriptor, Mapping):
                continue
            try:
                found[spec_id] = self.for_record({"storage": descriptor})
            except BackendError as exc:
                found[spec_id] = Broken(dict(descriptor), str(exc))
            except Exception as exc:  # noqa: BLE001 - a driver's own error: its type only (no value quoted)
                found[spec_id] = Broken(dict(descriptor), f"cannot be built here: {type(exc).__name__}")
        with self._lock:
            known = list(self.built.items())
        for spec_id, backend in known:
            if len(found) >= limit:
                break
            found.setdefault(spec_id, backend)
        return found

    def _catalogued(self, limit: int) -> list[dict[str, Any]]:
        if self.catalog is None:
            return []
        try:
            return self.catalog.recent(limit)
        except Exception as exc:  # noqa: BLE001 - the backends known here are still looked at
            log.warning("storage catalog not readable", extra={"reason": type(exc).__name__})
            return []

    def for_record(self, record: Mapping[str, Any]) -> StorageBackend:
        """The backend a file record was stored in."""
        descriptor = record.get("storage")
        if not isinstance(descriptor, Mapping):
            return self._get(LEGACY)
        spec_id = str(descriptor.get("id"))
        spec = self.specs.get(spec_id)
        with self._lock:
            known = self.built.get(spec_id) if spec is None else None
        if known is not None:
            return known
        if spec is None and descriptor.get("backend") == "s3":
            spec = self._from_catalog(spec_id)
        if spec is None:
            spec = parse_spec({k: v for k, v in descriptor.items() if k != "id" and v is not None})
        return self._get(spec)

    def _from_catalog(self, spec_id: str) -> StorageSpec:
        """An S3 location's spec with its credentials, from the catalog (the record holds none)."""
        doc = self.catalog.load(spec_id) if self.catalog is not None else None
        if doc is None or self.box is None:
            raise BackendError(f"storage {spec_id[:80]!r} is not known here (or STORAGE_SECRETS_KEY is not set)")
        try:
            secrets = {k: self.box.decrypt(v) for k, v in doc.get("secrets", {}).items() if k in SECRET_FIELDS}
        except SecretError as exc:
            raise BackendError(f"storage {spec_id[:80]!r}: {exc}") from None
        location = {k: v for k, v in doc["descriptor"].items() if k != "id" and v is not None}
        return parse_spec({**location, **secrets})


class Broken:
    """A catalogued storage that cannot be built here (``StorageBackend`` by shape): every call
    fails with the reason, so the probe reports it down instead of leaving it out."""

    def __init__(self, descriptor: dict[str, Any], reason: str) -> None:
        self.descriptor = descriptor
        self.kind = str(descriptor.get("backend", "unknown"))
        self.reason = reason

    def _fail(self, *_args: Any, **_kwargs: Any) -> Any:
        raise BackendError(self.reason)

    write = open = read_range = exists = delete = _fail

    def probe(self) -> bool:
        raise BackendError(self.reason)

    def leftovers(self, older_than: datetime, *, remove: bool) -> list[str]:
        raise BackendError(self.reason)


def storages_for(default: StorageSpec, *, db: Any, catalog: Catalog | None = None, box: SecretBox | None = None,
                 meters: Any = None) -> Storages:
    """The service's ``Storages``: real backends (GridFS in ``db``), each metered when ``meters`` is given."""
    from .metered import Metered

    def make(spec: StorageSpec) -> StorageBackend:
        backend = build(spec, db=db)
        return Metered(backend, meters) if meters is not None else backend

    return Storages(default, make, catalog, box)
