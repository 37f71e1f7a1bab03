"""Message contracts: every message that crosses RabbitMQ, defined once.

Commands are imperative (``StoreUpload``), events are past tense
(``FileStored``). Messages carry ids and Redis keys, never file bytes. Each
class names its routing key; ``encode``/``decode`` give the JSON wire form
``{"type": ..., "data": {...}}`` so a consumer can refuse what it does not know.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import uploadkeys
from .topology import stored_shard

# File statuses (SPEC "file-status").
CACHED = "cached"
RETRYING = "retrying"
UPLOADED = "uploaded_successfully"
FAILED = "upload_failed"
FILE_STATUSES = (CACHED, RETRYING, UPLOADED, FAILED)

# Group statuses (SPEC pool_aggregator).
GROUP_STATUSES = ("open", "ready", "processing", "done", "failed")

MAX_STORE_ATTEMPTS = 3  # SPEC: a failed store is retried twice more.


class UnknownMessage(ValueError):
    """A body that is not one of the contracts below (poison: dead-lettered, not retried)."""


_REGISTRY: dict[str, type[Message]] = {}


@dataclass(frozen=True)
class Message:
    routing_key: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def key(self) -> str:
        return self.routing_key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        return json.dumps({"type": type(self).__name__, "data": self.to_dict()}, default=str).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise UnknownMessage(f"{cls.__name__} lacks {missing}")
        try:
            return cls(**cls._rebuild({k: v for k, v in data.items() if k in names}))
        except (TypeError, ValueError) as exc:
            raise UnknownMessage(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        """JSON turns nested dataclasses into dicts and tuples into lists; a contract with
        nested parts rebuilds them here."""
        return fields


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that are fields of the (nested) dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def decode(body: bytes) -> Message:
    try:
        doc = json.loads(body)
        cls = _REGISTRY[doc["type"]]
        data = doc["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnknownMessage(f"not a known message: {body[:80]!r}") from exc
    if not isinstance(data, dict):
        raise UnknownMessage(f"{doc['type']} data is not an object")
    return cls.from_dict(data)


@dataclass(frozen=True)
class UploadItem:
    """One update inside an upload: a byte range with its own timestamp and file id."""

    file_id: str
    offset: int
    length: int
    timestamp: str
    name: str


# --- commands -------------------------------------------------------------


@dataclass(frozen=True)
class StoreUpload(Message):
    """Move a completely cached upload from Redis into permanent storage.

    The bytes are in Redis at ``chunk_key(i)`` for ``i in range(chunk_count)``
    (the layout is ``uploadkeys``');
    each item is one file record (a plain upload has one item covering it all).
    """

    routing_key: ClassVar[str] = "upload.store"

    upload_id: str
    owner_id: str
    owner_name: str
    file_name: str
    size: int
    sha256: str
    content_type: str
    chunk_size: int
    chunk_count: int
    cache_key: str
    items: tuple[UploadItem, ...]
    created: str
    pool_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    kind: str = "file"  # "file" or "result" (a processor's result for group_id)
    group_id: str | None = None

    def chunk_key(self, index: int) -> str:
        return uploadkeys.chunk_key(self.cache_key, index)

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        items = fields.get("items")
        if not isinstance(items, list | tuple) or not all(isinstance(i, dict | UploadItem) for i in items):
            raise ValueError("items must be a list of UploadItem objects")
        fields["items"] = tuple(i if isinstance(i, UploadItem) else UploadItem(**i) for i in items)
        return fields


@dataclass(frozen=True)
class PrestoreUpload(Message):
    """Start writing an upload to permanent storage while its chunks still arrive.

    Published by file_uploader when an upload of several chunks starts (one item
    covering the whole file); file_service_manager streams chunk after chunk from
    Redis to the storage backend as each is cached, so the ``StoreUpload`` that
    follows the last chunk finds the bytes already written and only checks and
    indexes them. An optimisation only: lost, late or abandoned, the ``StoreUpload``
    writes the bytes itself; nothing is visible before that ``StoreUpload`` indexes it.
    """

    routing_key: ClassVar[str] = "upload.prestore"

    upload_id: str
    cache_key: str
    size: int
    chunk_size: int
    chunk_count: int
    content_type: str
    file_name: str
    # The upload's pool: its bytes go to the pool's own storage (SPEC "Storage backends").
    pool_id: str | None = None

    def chunk_key(self, index: int) -> str:
        return uploadkeys.chunk_key(self.cache_key, index)


# --- events ---------------------------------------------------------------


@dataclass(frozen=True)
class FileStatusChanged(Message):
    """An upload moved to another SPEC status; the gateway tells owner and admins."""

    routing_key: ClassVar[str] = "file.status"

    file_id: str
    owner_id: str
    status: str
    attempt: int | None = None
    reason: str | None = None
    pool_id: str | None = None
    file_name: str | None = None

    def key(self) -> str:
        return f"file.status.{self.status}"


@dataclass(frozen=True)
class UploadStoreFailed(Message):
    """An attempt to store an upload failed; file_uploader decides on a retry."""

    routing_key: ClassVar[str] = "upload.store_failed"

    upload_id: str
    attempt: int
    reason: str
    command: StoreUpload  # the command that failed, published again (with attempt + 1) on a retry

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        command = fields.get("command")
        if isinstance(command, dict):
            fields["command"] = StoreUpload.from_dict(command)
        elif not isinstance(command, StoreUpload):
            raise ValueError("command must be a StoreUpload")
        return fields


@dataclass(frozen=True)
class FileStored(Message):
    """One file record is durable in permanent storage: a single-file upload's or a result's (a
    batch upload's records travel together as one ``UploadStored``)."""

    # Published as ``file.stored.<shard>`` (``key``): the shard of its pool, so it waits in its pool's
    # shard queue (topology.AGGREGATOR_SHARD_QUEUES); a file without a pool (nothing to group: its
    # consumer acks it at once) takes its upload id's shard, so no pool's shard gets them all.
    routing_key: ClassVar[str] = "file.stored"

    file_id: str
    upload_id: str
    owner_id: str
    owner_name: str
    file_name: str
    size: int
    sha256: str
    content_type: str
    timestamp: str
    created: str
    pool_id: str | None = None
    kind: str = "file"
    group_id: str | None = None

    def key(self) -> str:
        return f"{self.routing_key}.{stored_shard(self.pool_id or self.upload_id)}"


@dataclass(frozen=True)
class StoredItem:
    """One stored file record of a batch upload (``UploadStored``): ids and facts, never bytes."""

    file_id: str
    file_name: str
    size: int
    sha256: str
    timestamp: str


# A hard cap on one UploadStored's items, whatever MAX_ITEMS a deployment sets (default 1,000):
# bounds what a consumer decodes and holds from one message.
MAX_STORED_ITEMS = 10_000


@dataclass(frozen=True)
class UploadStored(Message):
    """Every stored file record of one batch upload, in one message (instead of one ``FileStored``
    each): pool_aggregator groups them in one slice, and another pool's file is not queued behind
    a thousand messages of one batch.

    ``items`` is bounded by file_uploader's ``MAX_ITEMS`` (default 1,000), so the message is too:
    ~0.2 KB per item with a short name, ~0.45 KB with a 255-byte name (UTF-8 JSON, see ``encode``):
    0.2-0.45 MB for 1,000 items (tests/unit/file_service_manager). The fields every item shares
    are the upload's, once.
    """

    routing_key: ClassVar[str] = "upload.stored"  # + ".<shard>", as FileStored (``key``)

    upload_id: str
    owner_id: str
    owner_name: str
    content_type: str
    created: str
    items: tuple[StoredItem, ...]
    pool_id: str | None = None
    kind: str = "file"

    def key(self) -> str:
        return f"{self.routing_key}.{stored_shard(self.pool_id or self.upload_id)}"

    def encode(self) -> bytes:
        # UTF-8 JSON: escaped, a 255-byte name of 4-byte characters took 756 bytes, and 1,000 of
        # them ~1 MB. Any JSON reader takes either. A name with a lone surrogate (which UTF-8
        # cannot carry) falls back to the escaped form.
        body = {"type": type(self).__name__, "data": self.to_dict()}
        try:
            return json.dumps(body, default=str, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return json.dumps(body, default=str).encode()

    def files(self) -> list[FileStored]:
        """The per-file events this message stands for (what ``FileStored`` would have said)."""
        return [FileStored(file_id=i.file_id, upload_id=self.upload_id, owner_id=self.owner_id,
                           owner_name=self.owner_name, file_name=i.file_name, size=i.size, sha256=i.sha256,
                           content_type=self.content_type, timestamp=i.timestamp, created=self.created,
                           pool_id=self.pool_id, kind=self.kind) for i in self.items]

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        items = fields.get("items")
        if not isinstance(items, list | tuple) or not all(isinstance(i, dict | StoredItem) for i in items):
            raise ValueError("items must be a list of StoredItem objects")
        if not 1 <= len(items) <= MAX_STORED_ITEMS:
            raise ValueError(f"items: 1 to {MAX_STORED_ITEMS}")
        # Fields a later version may add to an item are left out, as Message.from_dict does.
        built = tuple(i if isinstance(i, StoredItem) else StoredItem(**_known(StoredItem, i)) for i in items)
        # A malformed item fails here, at decode (dead-lettered once, as ``unknown``), not in the
        # grouping slice, where it would fail its whole batch for every delivery (review finding).
        for item in built:
            if not (isinstance(item.file_id, str) and isinstance(item.file_name, str) and isinstance(item.sha256, str)
                    and isinstance(item.timestamp, str) and isinstance(item.size, int)
                    and not isinstance(item.size, bool) and item.size >= 0):
                raise ValueError("items: file_id, file_name, sha256, timestamp strings and size an integer >= 0")
        fields["items"] = built
        return fields


@dataclass(frozen=True)
class FileGrouped(Message):
    """pool_aggregator put a stored file into a group (late: its own window had closed); the
    answer to a ``FileStored`` (a batch's files are answered together by ``FilesGrouped``)."""

    routing_key: ClassVar[str] = "file.grouped"

    file_id: str
    pool_id: str
    group_id: str
    late: bool


@dataclass(frozen=True)
class GroupedFiles:
    """Files that went into one group, all on time or all late (a part of ``FilesGrouped``)."""

    group_id: str
    late: bool
    file_ids: tuple[str, ...]


@dataclass(frozen=True)
class FilesGrouped(Message):
    """pool_aggregator put the files of one ``UploadStored`` into groups: one message (and one
    confirmed publish) per batch instead of one ``FileGrouped`` per file. ``groups`` has one part
    per (group, late) the batch's files went to (usually one); its file ids are the batch's, so
    they are bounded by ``MAX_ITEMS`` as the ``UploadStored`` is."""

    routing_key: ClassVar[str] = "files.grouped"

    pool_id: str
    upload_id: str
    groups: tuple[GroupedFiles, ...]

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        groups = fields.get("groups")
        if not isinstance(groups, list | tuple) or not all(isinstance(g, dict | GroupedFiles) for g in groups):
            raise ValueError("groups must be a list of GroupedFiles objects")
        parts = []
        for part in groups:
            if isinstance(part, dict):
                ids = part.get("file_ids")
                if not isinstance(ids, list | tuple) or not all(isinstance(i, str) for i in ids):
                    raise ValueError("file_ids must be a list of strings")
                part = GroupedFiles(**{**_known(GroupedFiles, part), "file_ids": tuple(ids)})
            parts.append(part)
        fields["groups"] = tuple(parts)
        return fields


@dataclass(frozen=True)
class ResultPublished(Message):
    """A processor's result is stored; every pool member is to receive it."""

    routing_key: ClassVar[str] = "pool.result_published"

    result_id: str
    pool_id: str
    group_id: str
    window_start: str
    window_end: str
    file_name: str
    size: int
    sha256: str
    created: str
    download_url: str
    # The pool's result number, 1, 2, 3, ... with no gaps (None only in messages from before seq).
    seq: int | None = None


@dataclass(frozen=True)
class GroupChanged(Message):
    """A group changed state (dashboards and metrics follow it)."""

    routing_key: ClassVar[str] = "pool.group_changed"

    pool_id: str
    group_id: str
    status: str
    window_start: str
    window_end: str
    # Optional (older messages decode without them): why a group failed (e.g. ``quorum_not_met``,
    # ``lease_expired``), and ``short`` when it turned ready below its quorum.
    reason: str | None = None
    short: bool | None = None


@dataclass(frozen=True)
class TokenRevoked(Message):
    """A token was logged out: gateways disconnect the sockets opened with it."""

    routing_key: ClassVar[str] = "auth.token_revoked"

    token_id: str
    user_id: str


@dataclass(frozen=True)
class MembershipChanged(Message):
    """A user joined a pool, changed role, or left it (role None)."""

    routing_key: ClassVar[str] = "auth.membership_changed"

    pool_id: str
    user_id: str
    user_name: str
    role: str | None


@dataclass(frozen=True)
class PoolDeleted(Message):
    """An admin deleted a pool (its members and keys are gone): open groups of it end."""

    routing_key: ClassVar[str] = "auth.pool_deleted"

    pool_id: str


@dataclass(frozen=True)
class AuditRecorded(Message):
    """One file operation for the append-only audit trail (owned by file_service_manager)."""

    routing_key: ClassVar[str] = "audit.recorded"

    audit_id: str
    time: str
    service: str
    actor: str
    action: str
    outcome: str
    file_id: str | None = None
    group_id: str | None = None
    pool_id: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# Records per ``AuditsRecorded`` an ``AuditTrail`` sends (``services.common.audit``): ~0.3-0.5 KB
# each on the wire, so 150-250 KB a message, one confirmed publish and one insert_many for 500.
AUDIT_BATCH = 500
# What a consumer decodes from one message: twice AUDIT_BATCH, so a later version may send more
# per message without an older consumer dead-lettering them; bounds what one message holds.
MAX_AUDIT_RECORDS = 1_000
# BSON integers are 64-bit: a larger byte count decodes from JSON but can never be stored.
_BSON_INT = range(-(2 ** 63), 2 ** 63)


def check_audit_record(record: AuditRecorded) -> None:
    """An audit record every field of which file_service_manager can store (``AuditsRecorded``)."""
    if not all(isinstance(v, str) for v in (record.audit_id, record.time, record.service, record.actor,
                                              record.action, record.outcome)) or not record.audit_id:
        raise ValueError("records: audit_id, time, service, actor, action and outcome strings")
    if not all(v is None or isinstance(v, str) for v in (record.file_id, record.group_id, record.pool_id,
                                                        record.sha256)):
        raise ValueError("records: file_id, group_id, pool_id and sha256 strings or null")
    if record.bytes is not None and (not isinstance(record.bytes, int) or isinstance(record.bytes, bool)
                                     or record.bytes not in _BSON_INT):
        raise ValueError("records: bytes a 64-bit integer or null")
    if not isinstance(record.detail, dict):
        raise ValueError("records: detail an object")


@dataclass(frozen=True)
class AuditsRecorded(Message):
    """Audit records of one service, published together (``AuditTrail``'s background thread):
    one confirmed publish, one delivery and one MongoDB insert for up to ``AUDIT_BATCH`` records
    instead of one each (issue 13).

    Same routing key as ``AuditRecorded``, so the one audit queue takes both: a single record of
    an older replica during an upgrade (or one published in place, ``AuditTrail``) and a batch.
    Decoding checks every record's fields (strings, a 64-bit byte count), so a malformed record
    is refused at once (dead-lettered as ``unknown``) instead of failing its batch's insert on
    every delivery.
    """

    routing_key: ClassVar[str] = "audit.recorded"

    records: tuple[AuditRecorded, ...]

    @classmethod
    def _rebuild(cls, fields: dict[str, Any]) -> dict[str, Any]:
        records = fields.get("records")
        if not isinstance(records, list | tuple) or not all(isinstance(r, dict | AuditRecorded) for r in records):
            raise ValueError("records must be a list of AuditRecorded objects")
        if not 1 <= len(records) <= MAX_AUDIT_RECORDS:
            raise ValueError(f"records: 1 to {MAX_AUDIT_RECORDS}")
        built = []
        for record in records:
            # A later version's extra fields are left out, as Message.from_dict does.
            one = record if isinstance(record, AuditRecorded) else AuditRecorded.from_dict(record)
            if not isinstance(one, AuditRecorded):
                raise ValueError("records must be AuditRecorded objects")
            check_audit_record(one)
            built.append(one)
        fields["records"] = tuple(built)
        return fields


@dataclass(frozen=True)
class StageResult(Message):
    """Deliver one pool result to one of its pool's staging targets (SPEC "Staging").

    One command per (result, target, attempt): ``target`` is the target's index in the
    pool's ``staging`` list when the result was published (the status document keeps the
    target's kind); a failed attempt comes back through the staging delay queues with
    ``attempt`` + 1. It carries no target settings and no secrets: the handler reads the
    pool's current ``staging`` from auth.
    """

    routing_key: ClassVar[str] = "staging.deliver"

    result_id: str
    pool_id: str
    group_id: str
    seq: int
    window_start: str
    file_name: str
    size: int
    sha256: str
    download_url: str
    target: int
    attempt: int = 1
