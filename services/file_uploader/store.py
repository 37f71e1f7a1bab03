"""The Redis upload cache (ARCHITECTURE "Redis upload cache layout"): the one module that owns it.

``cache_key = {prefix}:upload:{file_id}`` is the session hash; ``{cache_key}:chunk:{i}``
the chunks, ``{cache_key}:received`` the received indexes, ``{cache_key}:writer``
the writer lock, ``{cache_key}:status`` a small tombstone (owner, status, the last
failed store attempt) that outlives the bytes so completion, retries and status
updates stay idempotent after file_service_manager deleted the cache.
Beside it: ``{prefix}:upload-owner:{owner_id}`` (sorted set: unfinished uploads of
an owner, score = when opened; a member lives as long as its session),
``{prefix}:upload-bytes:{owner_id}`` (hash: upload id -> chunk bytes cached, the
owner's cached-bytes budget) and ``{prefix}:upload-pending`` (hash: upload id ->
size of completed uploads not yet stored). Every key carries an expiry but one:
``{prefix}:upload-quota:{owner_id}`` (hash: "stored" -> bytes of completed
uploads, upload id -> declared size of an unfinished one), the USER_QUOTA_BYTES
ledger, which must outlive every upload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from services.common import uploadkeys

from .core import UploadPlan
from .ports import CACHED, CLAIM_LEASE_SECONDS, UPLOADING  # noqa: F401 - the cache's session statuses, re-exported

# An owner's open uploads (a sorted set: upload id -> when its slot was opened). A slot
# lives exactly as long as its upload: it is removed when the upload completes, is
# cancelled or dropped, and pruned here once the upload's session is gone (stored,
# swept, or expired unfinished). Pruning by session and not by a deadline is the
# point: an upload kept alive by its writes must keep its slot, or the per-user cap
# leaks. A member younger than ARGV[2] seconds may not have its session yet
# (open_slot runs just before create), so it is kept. The set holds at most the
# limit's count of members, so the loop is bounded.
_PRUNE_SLOTS = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local pruned = 0
for i = 1, #members, 2 do
  if tonumber(members[i + 1]) < tonumber(ARGV[1]) - tonumber(ARGV[2])
      and redis.call('EXISTS', ARGV[3] .. members[i]) == 0 then
    redis.call('ZREM', KEYS[1], members[i])
    pruned = pruned + 1
  end
end
"""

# Atomic "may this owner open one more upload?": the check and the add must not
# interleave with another request of the same owner, or the limit leaks.
_OPEN_UPLOAD = _PRUNE_SLOTS + """
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""

# An upload's start in one round trip (it was three): the slot (as _OPEN_UPLOAD), the quota
# reservation (as _RESERVE; a refusal gives the slot back), then the session hash, the writer
# lock (none when ARGV[9] is empty: the tus door's creation, whose PATCHes take it each) and
# the tombstone. KEYS: owner slots, quota ledger, session, writer lock, status. ARGV: now,
# grace, session prefix, upload id, limit, owner-slots ttl, size, quota, writer, lock seconds,
# upload ttl, status ttl, 2 x the session's field count, the session's fields and values,
# then the tombstone's. Bounded loops: the slots and the ledger hold at most the per-user
# limit's count of members (see _PRUNE_SLOTS and _RESERVE).
_START_UPLOAD = _PRUNE_SLOTS + """
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 'slots' end
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
  if id ~= 'stored' and not redis.call('ZSCORE', KEYS[1], id) then redis.call('HDEL', KEYS[2], id) end
end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 0 then
  local quota = tonumber(ARGV[8])
  if quota > 0 then
    local used = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[2])) do used = used + tonumber(v) end
    if used + tonumber(ARGV[7]) > quota then
      redis.call('ZREM', KEYS[1], ARGV[4])
      return 'quota'
    end
  end
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[7])
end
local n = tonumber(ARGV[13])
redis.call('HSET', KEYS[3], unpack(ARGV, 14, 13 + n))
redis.call('EXPIRE', KEYS[3], ARGV[11])
if ARGV[9] ~= '' then redis.call('SET', KEYS[4], ARGV[9], 'EX', ARGV[10]) end
redis.call('HSET', KEYS[5], unpack(ARGV, 14 + n))
redis.call('EXPIRE', KEYS[5], ARGV[12])
return 'ok'
"""

_PRUNE_OWNER = _PRUNE_SLOTS + """
return pruned
"""

# The writer lock: free -> take it; ours -> refresh it; someone else's -> refuse.
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""

# The owner's cached-bytes budget (a hash of upload id -> bytes): whether ``need`` more bytes
# would pass it (ARGV[7], 0 = no budget). Its fields are pruned of uploads whose session is gone
# (ARGV[8] .. id) only when the budget or the field bound (ARGV[11]) is reached. Spliced into
# ``_PUT_CHUNK`` and ``_SEAL_TAIL``, which pass those three ARGVs at the same positions.
_OVER_BUDGET = """
local function over_budget(budget, need)
  local limit = tonumber(ARGV[7])
  if limit <= 0 then return false end
  local function total()
    local sum = 0
    for _, v in ipairs(redis.call('HVALS', budget)) do sum = sum + tonumber(v) end
    return sum
  end
  if total() + need > limit or redis.call('HLEN', budget) > tonumber(ARGV[11]) then
    for _, id in ipairs(redis.call('HKEYS', budget)) do
      if redis.call('EXISTS', ARGV[8] .. id) == 0 then redis.call('HDEL', budget, id) end
    end
    return total() + need > limit
  end
  return false
end
"""

# Store one chunk (KEYS: chunk, received set, session, status, owner slots, owner
# bytes). Refused as 'gone' once the session is gone (a late write after a drop
# must not leave orphan keys), as 'full' when the owner's cached bytes (chunks of
# uploads not stored yet, one hash field per upload) would pass the budget. The
# budget's fields are pruned of uploads whose session is gone (stored by
# file_service_manager, dropped, or expired) only when the budget or the field
# count bound (ARGV[11]) is reached: the common chunk pays one HVALS of a few fields.
_PUT_CHUNK = _OVER_BUDGET + """
if redis.call('EXISTS', KEYS[3]) == 0 then return 'gone' end
local outcome = 'new'
local existing = redis.call('GET', KEYS[1])
if existing then
  if existing ~= ARGV[1] then return 'different' end
  outcome = 'same'
else
  if over_budget(KEYS[6], string.len(ARGV[1])) then return 'full' end
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  redis.call('HINCRBY', KEYS[6], ARGV[6], string.len(ARGV[1]))
  redis.call('EXPIRE', KEYS[6], ARGV[9])
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[3], 'updated', ARGV[10])
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('EXPIRE', KEYS[5], ARGV[5])
return outcome
"""
OWNER_BYTES_PRUNE_AT = 64  # fields of an owner's byte budget before a prune pass (bounds the hash)

# A chunk write only keeps a lock its writer already holds: it never takes a free
# one. A released lock thus stays free for the reconnecting client even when a
# write of the old, dropped connection was still in flight (it arrives late and
# is refused instead of locking the new connection out until the lock expires).
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# uploading -> cached exactly once: a repeated complete-upload finds 'cached' and
# publishes nothing.
# The transition also moves the upload's bytes in the owner's quota ledger (KEYS[2])
# from "reserved" (field = upload id) to "stored", once: the tombstone (KEYS[3])
# remembers what was counted, so giving it back (_GIVE_BACK) happens once too.
# The tombstone says 'cached' from this moment: file_service_manager may store the upload
# and drop its session as soon as the StoreUpload is published, before the completer gets
# to write anything more (or if it is killed then), and a retried complete-upload that finds
# no session answers from the tombstone ('cached', not "no such upload"). Until the publish is
# confirmed (``_cached`` then gives the tombstone its own TTL) it lives no longer than the
# session: a completer killed before publishing leaves a session that expires unstored, and
# its tombstone must not answer 'cached' after that.
_MARK_CACHED = """
if redis.call('HGET', KEYS[1], 'status') == 'uploading' then
  redis.call('HSET', KEYS[1], 'status', 'cached', 'published', '0', 'cached_at', ARGV[3], 'cached_sha256', ARGV[4])
  redis.call('HSET', KEYS[3], 'status', 'cached')
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[3], left) end
  redis.call('HDEL', KEYS[2], ARGV[1])
  if redis.call('HSETNX', KEYS[3], 'quota', ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], 'stored', ARGV[2])
  end
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  redis.call('DEL', KEYS[5])
  return 1
end
return 0
"""

# After the StoreUpload is confirmed, in one round trip (it was five): the session marked
# published (only while it exists: HSET on an expired session would recreate it without a
# TTL), the tombstone cached with the file's sha256, the owner's slot and reservation freed.
# KEYS: session, status, owner slots, quota ledger. ARGV: upload id, sha256, status ttl.
_PUBLISHED = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'published', '1') end
local st = redis.call('HGET', KEYS[2], 'status')
if not st or st == 'uploading' or st == 'cached' then
  redis.call('HSET', KEYS[2], 'status', 'cached', 'sha256', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# uploading -> cancelled, atomically: a cancel racing the last chunk's completion either wins
# (the completion then finds no 'uploading' and publishes nothing) or loses (409), never both.
_MARK_CANCELLED = """
if redis.call('HGET', KEYS[1], 'status') == 'uploading' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled')
  return 1
end
return 0
"""

# An upload that will not be stored (dropped, failed, cancelled) gives its bytes back:
# its reservation, and what mark_cached counted as stored (once).
_GIVE_BACK = """
redis.call('HDEL', KEYS[1], ARGV[1])
local counted = redis.call('HGET', KEYS[2], 'quota')
if counted then
  redis.call('HDEL', KEYS[2], 'quota')
  redis.call('HINCRBY', KEYS[1], 'stored', -tonumber(counted))
  return tonumber(counted)
end
return 0
"""

# USER_QUOTA_BYTES at start: the owner's ledger (KEYS[1]) holds "stored" (bytes of
# completed uploads, see _MARK_CACHED) and one field per unfinished upload with its
# declared size, so concurrent starts cannot together pass the quota. A reservation
# whose upload no longer holds a slot (KEYS[2]) is dropped first: slots are pruned
# with their sessions, so the fields stay at most MAX_UPLOADS_PER_USER + 1.
_RESERVE = """
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  if id ~= 'stored' and not redis.call('ZSCORE', KEYS[2], id) then redis.call('HDEL', KEYS[1], id) end
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
local quota = tonumber(ARGV[3])
if quota > 0 then
  local used = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do used = used + tonumber(v) end
  if used + tonumber(ARGV[2]) > quota then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Claim "failed attempt N is being handled": a redelivered UploadStoreFailed for
# an attempt already handled (or older) is refused.
# A failed attempt is claimed before it is handled and finished after (``claim_until`` removed):
# ``failed_attempt`` is the newest attempt claimed, ``claim_until`` (ms, Redis's clock, shared by
# every replica) how long its claim holds while unfinished. 0: handled already (or older); 2: a
# live claim (a concurrent handler -- or one SIGKILLed a moment ago, whose message the broker
# redelivers at once: the redelivery is retried until the claim lapses, then takes it over);
# 1: claimed now. ARGV: attempt, the status key's ttl, the lease in ms.
_CLAIM_ATTEMPT = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'failed_attempt') or '0')
local attempt = tonumber(ARGV[1])
if cur > attempt then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if cur == attempt then
  local claimed_until = tonumber(redis.call('HGET', KEYS[1], 'claim_until') or '0')
  if claimed_until == 0 then return 0 end
  if claimed_until > now then return 2 end
end
redis.call('HSET', KEYS[1], 'failed_attempt', ARGV[1], 'claim_until', now + tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_FINISH_ATTEMPT = """
if tonumber(redis.call('HGET', KEYS[1], 'failed_attempt') or '0') == tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'claim_until')
end
return 1
"""

_UNCLAIM_ATTEMPT = """
if tonumber(redis.call('HGET', KEYS[1], 'failed_attempt') or '0') == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'failed_attempt', tonumber(ARGV[1]) - 1)
  redis.call('HDEL', KEYS[1], 'claim_until')
end
return 1
"""


# The tus door's partial tail: ``{cache_key}:tail:{index}`` holds the bytes of chunk ``index``
# received so far (less than a chunk), appended PATCH by PATCH -- each PATCH sends Redis only its
# new bytes, and the offset needs only STRLEN; the bytes are read once, when the chunk completes.
# Appended (KEYS: tail, session, writer lock, chunk ``index``, received set, status) only while
# the session lives, by the writer holding the lock, for a chunk not written yet, and at the
# length the writer saw (ARGV[3]): a late PATCH of a dropped connection can neither clobber nor
# double the tail of the request that took over. It refreshes the upload's expiry like a chunk,
# and the writer lock (WRITER_LOCK_SECONDS): a PATCH slower than the lock but still sending
# keeps it, as the chunk writes of the other door do (review: a 30 s PATCH answered 423).
_APPEND_TAIL = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 'gone' end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'locked' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'written' end
if redis.call('STRLEN', KEYS[1]) ~= tonumber(ARGV[3]) then return 'moved' end
redis.call('EXPIRE', KEYS[3], ARGV[7])
redis.call('APPEND', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'updated', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[5], ARGV[4])
redis.call('EXPIRE', KEYS[6], ARGV[6])
return 'ok'
"""

# The tus door's partial tail, sealed: the PATCH that completes chunk ``index`` appends its
# bytes to the tail and RENAMEs the tail into the chunk key, in the same script and under the
# same checks as ``_APPEND_TAIL`` plus the chunk's own (the session still uploading, the
# chunk not written, the owner's cached-bytes budget as in ``_PUT_CHUNK``). The bytes already
# in the tail never leave Redis: before, the completing PATCH read the tail back (up to a
# chunk), joined it in Python and wrote the whole chunk (~3x a chunk's bytes through Redis
# and the process per chunk; now the PATCH's own bytes only). A tail that is empty (a PATCH
# that carries a whole chunk) is SET into the chunk key directly. Memory: an APPENDed string
# may keep up to 1 MiB of Redis's growth slack (SDS preallocation) until the chunk is stored.
# KEYS: tail, session, writer lock, chunk, received set, status, owner slots, owner bytes.
_SEAL_TAIL = _OVER_BUDGET + """
if redis.call('EXISTS', KEYS[2]) == 0 then return 'gone' end
if redis.call('HGET', KEYS[2], 'status') ~= 'uploading' then return 'complete' end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'locked' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'written' end
local at = tonumber(ARGV[3])
if redis.call('STRLEN', KEYS[1]) ~= at then return 'moved' end
local need = at + string.len(ARGV[2])
if over_budget(KEYS[8], need) then return 'full' end
if at == 0 then
  redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[4])
else
  redis.call('APPEND', KEYS[1], ARGV[2])
  redis.call('RENAME', KEYS[1], KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
redis.call('HINCRBY', KEYS[8], ARGV[6], need)
redis.call('EXPIRE', KEYS[8], ARGV[9])
redis.call('SADD', KEYS[5], ARGV[12])
redis.call('EXPIRE', KEYS[5], ARGV[4])
redis.call('HSET', KEYS[2], 'updated', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[6], ARGV[13])
redis.call('EXPIRE', KEYS[7], ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[14])
return 'ok'
"""

# Everything a tus PATCH checks and renews before its body, in one round trip (it was eight:
# the session, the writer lock, the slot, the quota reservation, the expiry of every key, the
# existing chunks, the tail's length). Only the common case is decided here: the caller's own
# upload, still uploading, its slot and quota reservation in place. Anything else answers
# 'slow' having changed nothing, and the caller takes the general path (``resume``), which
# re-creates a lost slot or reservation and tells 404 from 410 and 409. The writer lock: free
# or ours -> taken (a lock held by another request -> 'locked', nothing renewed). Then every
# chunk key's expiry is renewed (bounded by chunk_count, MAX_FILE_SIZE / CHUNK_SIZE) and the
# written chunks counted from the start: a tus upload writes them in order, so the first
# missing index is where its tail lies.
# KEYS: session, writer lock, status, owner slots, quota ledger, received set.
# ARGV: owner id, writer, lock seconds, upload ttl, status ttl, owner-slots ttl, cache key, upload id.
_TUS_BEGIN = """
local s = redis.call('HGETALL', KEYS[1])
if #s == 0 then return {'slow'} end
local owner, status, count
for i = 1, #s, 2 do
  if s[i] == 'owner_id' then owner = s[i + 1]
  elseif s[i] == 'status' then status = s[i + 1]
  elseif s[i] == 'chunk_count' then count = tonumber(s[i + 1]) end
end
if owner ~= ARGV[1] or status ~= 'uploading' or not count then return {'slow'} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return {'locked', s} end
if not redis.call('ZSCORE', KEYS[4], ARGV[8]) or redis.call('HEXISTS', KEYS[5], ARGV[8]) == 0 then
  return {'slow'}
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[6])
local done = -1
for i = 0, count - 1 do
  if redis.call('EXPIRE', ARGV[7] .. ':chunk:' .. i, ARGV[4]) == 0 and done < 0 then done = i end
end
if done < 0 then done = count end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[6], ARGV[4])
redis.call('EXPIRE', KEYS[3], math.max(tonumber(ARGV[4]), tonumber(ARGV[5])))
local tail = 0
if done < count then
  local key = ARGV[7] .. ':tail:' .. done
  tail = redis.call('STRLEN', key)
  if tail > 0 then redis.call('EXPIRE', key, ARGV[4]) end
end
return {'ok', s, done, tail}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _session_doc(raw: dict[Any, Any]) -> dict[str, Any]:
    """A session hash as the use cases read it (sizes as ints, items and metadata decoded)."""
    doc: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
    for name in ("size", "chunk_size", "chunk_count"):
        doc[name] = int(doc.get(name, 0))
    doc["items"] = json.loads(doc.get("items") or "[]")
    doc["metadata"] = json.loads(doc.get("metadata") or "{}")
    for name in ("sha256", "pool_id", "group_id"):
        doc[name] = doc.get(name) or None
    return doc


class UploadStore:
    def __init__(self, client: redis.Redis, prefix: str, *, upload_ttl: int = 3600, cached_ttl: int = 86400,
                 status_ttl: int = 86400, lock_seconds: int = 30, start_grace: float = 10.0) -> None:
        # redis-py types the sync client's answers as ``T | Awaitable[T]``; this one is sync.
        self.r: Any = client
        self.prefix = prefix
        self.upload_ttl = upload_ttl
        self.cached_ttl = cached_ttl
        self.status_ttl = status_ttl
        self.lock_seconds = lock_seconds
        # How long a freshly opened slot is kept without its session (the start's own
        # open_slot -> create takes milliseconds; 10 s is slack for a slow Redis).
        self.start_grace = start_grace
        self._open = client.register_script(_OPEN_UPLOAD)
        self._prune_owner = client.register_script(_PRUNE_OWNER)
        self._put = client.register_script(_PUT_CHUNK)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._refresh = client.register_script(_REFRESH)
        self._mark_cached = client.register_script(_MARK_CACHED)
        self._mark_cancelled = client.register_script(_MARK_CANCELLED)
        self._give_back = client.register_script(_GIVE_BACK)
        self._reserve = client.register_script(_RESERVE)
        self._claim = client.register_script(_CLAIM_ATTEMPT)
        self._unclaim = client.register_script(_UNCLAIM_ATTEMPT)
        self._finish = client.register_script(_FINISH_ATTEMPT)
        self._append_tail = client.register_script(_APPEND_TAIL)
        self._seal_tail = client.register_script(_SEAL_TAIL)
        self._published = client.register_script(_PUBLISHED)
        self._start = client.register_script(_START_UPLOAD)
        self._tus_begin = client.register_script(_TUS_BEGIN)

    # --- keys --------------------------------------------------------------
    # The layout is shared with file_service_manager, so it is written in ``uploadkeys`` only.
    def cache_key(self, file_id: str) -> str:
        return uploadkeys.session_key(self.prefix, file_id)

    def chunk_key(self, file_id: str, index: int) -> str:
        return uploadkeys.chunk_key(self.cache_key(file_id), index)

    def _received(self, file_id: str) -> str:
        return uploadkeys.received_key(self.cache_key(file_id))

    def _writer(self, file_id: str) -> str:
        return uploadkeys.writer_key(self.cache_key(file_id))

    def _status(self, file_id: str) -> str:
        return uploadkeys.status_key(self.cache_key(file_id))

    def _tail(self, file_id: str, index: int) -> str:
        # file_uploader's own key (the tus door's partial chunk); file_service_manager never
        # sees one: the chunk's write removes it, so none is left when the upload completes.
        return f"{self.cache_key(file_id)}:tail:{index}"

    def _owner(self, owner_id: str) -> str:
        return uploadkeys.owner_key(self.prefix, owner_id)

    def _owner_bytes(self, owner_id: str) -> str:
        # file_uploader's own key (file_service_manager never reads it): upload id -> chunk bytes cached.
        return f"{self.prefix}:upload-bytes:{owner_id}"

    def _quota(self, owner_id: str) -> str:
        # file_uploader's own key. No expiry, on purpose: it is the user's account of stored
        # bytes (USER_QUOTA_BYTES); one small hash per user who ever uploaded. Counted here,
        # not asked of file_service_manager (which owns the index): no cross-service call per
        # start, and bytes on their way to storage already count, so parallel starts cannot
        # pass the quota before the first is stored (ARCHITECTURE, "Stored bytes per user").
        return f"{self.prefix}:upload-quota:{owner_id}"

    @property
    def _owner_bytes_ttl(self) -> int:
        # Refreshed by every new chunk; outlives an unfinished upload and a completed one
        # waiting for its store. Should it lapse during long retries, the budget only
        # undercounts bytes that are about to leave anyway.
        return self.upload_ttl + self.cached_ttl

    @property
    def _pending(self) -> str:
        return f"{self.prefix}:upload-pending"

    def ping(self) -> bool:
        return bool(self.r.ping())

    # --- sessions ------------------------------------------------------------
    @property
    def _owner_ttl(self) -> int:
        # Outlives every session it counts: each chunk write refreshes both.
        return self.upload_ttl + 60

    def open_slot(self, owner_id: str, upload_id: str, limit: int) -> bool:
        return bool(self._open(keys=[self._owner(owner_id)],
                               args=[time.time(), self.start_grace, uploadkeys.session_prefix(self.prefix),
                                     upload_id, limit, self._owner_ttl]))

    def free_slot(self, owner_id: str, upload_id: str) -> None:
        """The upload is no longer unfinished: its slot and its quota reservation go (the bytes
        counted as stored at completion stay)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(self._owner(owner_id), upload_id)
        pipe.hdel(self._quota(owner_id), upload_id)
        pipe.execute()

    @staticmethod
    def _session_fields(plan: UploadPlan) -> dict[str, Any]:
        return {
            "upload_id": plan.upload_id, "owner_id": plan.owner_id, "owner_name": plan.owner_name,
            "file_name": plan.file_name, "size": plan.size, "content_type": plan.content_type,
            "sha256": plan.sha256 or "", "pool_id": plan.pool_id or "", "timestamp": plan.timestamp,
            "items": json.dumps([i.__dict__ for i in plan.items]), "metadata": json.dumps(plan.metadata),
            "kind": plan.kind, "group_id": plan.group_id or "", "chunk_size": plan.chunk_size,
            "chunk_count": plan.chunk_count, "created": plan.created, "status": UPLOADING,
            "updated": time.time(),
        }

    @staticmethod
    def _tomb_fields(plan: UploadPlan) -> dict[str, Any]:
        return {"owner_id": plan.owner_id, "status": UPLOADING, "pool_id": plan.pool_id or "",
                "file_name": plan.file_name}

    def create(self, plan: UploadPlan, writer: str) -> None:
        key = self.cache_key(plan.upload_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=self._session_fields(plan))
        pipe.expire(key, self.upload_ttl)
        pipe.set(self._writer(plan.upload_id), writer, ex=self.lock_seconds)
        pipe.hset(self._status(plan.upload_id), mapping=self._tomb_fields(plan))
        pipe.expire(self._status(plan.upload_id), self.status_ttl)
        pipe.execute()

    def start_upload(self, plan: UploadPlan, writer: str | None, *, limit: int, quota: int,
                     tomb: dict[str, Any] | None = None) -> str:
        """``open_slot``, ``reserve`` and ``create`` in one script (``_START_UPLOAD``): ``ok``,
        ``slots`` (the owner has ``limit`` unfinished uploads) or ``quota`` (nothing kept)."""
        session = [str(x) for pair in self._session_fields(plan).items() for x in pair]
        tombstone = [str(x) for pair in {**self._tomb_fields(plan), **(tomb or {})}.items() for x in pair]
        return _text(self._start(
            keys=[self._owner(plan.owner_id), self._quota(plan.owner_id), self.cache_key(plan.upload_id),
                  self._writer(plan.upload_id), self._status(plan.upload_id)],
            args=[time.time(), self.start_grace, uploadkeys.session_prefix(self.prefix), plan.upload_id, limit,
                  self._owner_ttl, plan.size, quota, writer or "", self.lock_seconds, self.upload_ttl,
                  self.status_ttl, len(session), *session, *tombstone]))

    def session(self, file_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(self.cache_key(file_id))
        return _session_doc(raw) if raw else None

    def tus_begin(self, file_id: str, owner_id: str, writer: str) -> tuple[str, dict[str, Any] | None, int, int]:
        """A tus PATCH's checks in one round trip (``_TUS_BEGIN``): ``(outcome, session, written
        chunks from the start, tail length)``; outcome ``ok`` (lock taken, keys renewed),
        ``locked`` (with the session) or ``slow`` (nothing done: take the general path)."""
        answer = self._tus_begin(
            keys=[self.cache_key(file_id), self._writer(file_id), self._status(file_id), self._owner(owner_id),
                  self._quota(owner_id), self._received(file_id)],
            args=[owner_id, writer, self.lock_seconds, self.upload_ttl, self.status_ttl, self._owner_ttl,
                  self.cache_key(file_id), file_id])
        outcome = _text(answer[0])
        if outcome == "slow":
            return outcome, None, 0, 0
        flat = answer[1]
        session = _session_doc(dict(zip(flat[0::2], flat[1::2], strict=True)))
        if outcome == "locked":
            return outcome, session, 0, 0
        return outcome, session, int(answer[2]), int(answer[3])

    def seal_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int, *, owner_id: str,
                  max_owner_bytes: int = 0) -> str:
        return _text(self._seal_tail(
            keys=[self._tail(file_id, index), self.cache_key(file_id), self._writer(file_id),
                  self.chunk_key(file_id, index), self._received(file_id), self._status(file_id),
                  self._owner(owner_id), self._owner_bytes(owner_id)],
            args=[writer, data, at, self.upload_ttl, time.time(), file_id, max_owner_bytes,
                  uploadkeys.session_prefix(self.prefix), self._owner_bytes_ttl, self._owner_ttl,
                  OWNER_BYTES_PRUNE_AT, index, self.status_ttl, self.lock_seconds]))

    def status(self, file_id: str) -> dict[str, str] | None:
        raw = self.r.hgetall(self._status(file_id))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    def set_status(self, file_id: str, status: str, **fields: Any) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._status(file_id), mapping={"status": status,
                                                  **{k: str(v) for k, v in fields.items() if v is not None}})
        pipe.expire(self._status(file_id), self.status_ttl)
        pipe.execute()

    def received(self, file_id: str) -> set[int]:
        return {int(x) for x in self.r.smembers(self._received(file_id))}

    def received_count(self, file_id: str) -> int:
        return int(self.r.scard(self._received(file_id)))

    # --- the writer lock -----------------------------------------------------
    def acquire_writer(self, file_id: str, writer: str) -> bool:
        return bool(self._acquire(keys=[self._writer(file_id)], args=[writer, self.lock_seconds]))

    def refresh_writer(self, file_id: str, writer: str) -> bool:
        return bool(self._refresh(keys=[self._writer(file_id)], args=[writer, self.lock_seconds]))

    def release_writer(self, file_id: str, writer: str) -> bool:
        return bool(self._release(keys=[self._writer(file_id)], args=[writer]))

    def writer(self, file_id: str) -> str | None:
        value = self.r.get(self._writer(file_id))
        return _text(value) if value is not None else None

    # --- chunks --------------------------------------------------------------
    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, max_owner_bytes: int = 0) -> str:
        """Store chunk ``index`` once: ``new``, ``same`` (identical rewrite), ``different``,
        ``full`` (the owner's cached bytes would pass ``max_owner_bytes``) or ``gone`` (no session).

        One script, so the budget check and the write cannot interleave with another
        chunk of the same owner, and two writers racing on one index cannot leave a
        mixture (a chunk is immutable once written; a retry after a lost answer is harmless).
        """
        key = self.cache_key(file_id)
        return _text(self._put(
            keys=[self.chunk_key(file_id, index), self._received(file_id), key, self._status(file_id),
                  self._owner(owner_id), self._owner_bytes(owner_id)],
            args=[data, index, self.upload_ttl, self.status_ttl, self._owner_ttl, file_id, max_owner_bytes,
                  uploadkeys.session_prefix(self.prefix), self._owner_bytes_ttl, time.time(),
                  OWNER_BYTES_PRUNE_AT]))

    def cached_bytes(self, owner_id: str) -> int:
        """The owner's chunk bytes still cached (uploads whose session is gone may still count)."""
        return sum(int(v) for v in self.r.hvals(self._owner_bytes(owner_id)))

    def read_chunk(self, file_id: str, index: int) -> bytes | None:
        return self.r.get(self.chunk_key(file_id, index))

    def read_range(self, file_id: str, index: int, start: int, end: int) -> bytes | None:
        # GETRANGE: a few bytes, not a 4 MiB chunk; it answers b"" for a missing key (start < end).
        piece = self.r.getrange(self.chunk_key(file_id, index), start, end - 1)
        return bytes(piece) if piece else None

    def existing_chunks(self, file_id: str, count: int) -> set[int]:
        """Indexes whose chunk key still exists (the received set may name an expired chunk)."""
        have: set[int] = set()
        for start in range(0, count, 1000):
            pipe = self.r.pipeline(transaction=False)
            idx = list(range(start, min(count, start + 1000)))
            for i in idx:
                pipe.exists(self.chunk_key(file_id, i))
            have.update(i for i, ok in zip(idx, pipe.execute(), strict=True) if ok)
        return have

    # --- the tus door's partial tail -------------------------------------------
    def tail_length(self, file_id: str, index: int) -> int:
        return int(self.r.strlen(self._tail(file_id, index)))

    def read_tail(self, file_id: str, index: int) -> bytes | None:
        data = self.r.get(self._tail(file_id, index))
        return bytes(data) if data is not None else None

    def append_tail(self, file_id: str, index: int, data: bytes, writer: str, at: int) -> str:
        return _text(self._append_tail(
            keys=[self._tail(file_id, index), self.cache_key(file_id), self._writer(file_id),
                  self.chunk_key(file_id, index), self._received(file_id), self._status(file_id)],
            args=[writer, data, at, self.upload_ttl, time.time(), self.status_ttl, self.lock_seconds]))

    def drop_tail(self, file_id: str, index: int) -> None:
        self.r.delete(self._tail(file_id, index))

    def touch(self, file_id: str, chunk_count: int, ttl: int) -> None:
        """Give every key of the upload ``ttl`` more seconds (resume, completion): one round trip
        per 1000 keys (a pipeline's commands are bounded so)."""
        commands = [(self.chunk_key(file_id, i), ttl) for i in range(chunk_count)]
        commands += [(self.cache_key(file_id), ttl), (self._received(file_id), ttl),
                     (self._status(file_id), max(ttl, self.status_ttl))]
        for start in range(0, len(commands), 1000):
            pipe = self.r.pipeline(transaction=False)
            for key, seconds in commands[start:start + 1000]:
                pipe.expire(key, seconds)
            pipe.execute()

    # --- completion and removal ----------------------------------------------
    def mark_cached(self, file_id: str, size: int, *, owner_id: str, sha256: str = "", now: float = 0.0) -> bool:
        # One script: the transition, the quota, the pending bytes and the lock's removal.
        return bool(self._mark_cached(keys=[self.cache_key(file_id), self._quota(owner_id), self._status(file_id),
                                            self._pending, self._writer(file_id)],
                                      args=[file_id, size, now or time.time(), sha256, self.cached_ttl]))

    def published(self, file_id: str, *, owner_id: str, sha256: str) -> None:
        self._published(keys=[self.cache_key(file_id), self._status(file_id), self._owner(owner_id),
                              self._quota(owner_id)], args=[file_id, sha256, self.status_ttl])

    def mark_published(self, file_id: str) -> None:
        # HSET on an expired session would recreate it without a TTL: only if it still exists.
        if self.r.exists(self.cache_key(file_id)):
            self.r.hset(self.cache_key(file_id), "published", "1")

    def claim_republish(self, file_id: str, seconds: int) -> bool:
        # Under the upload's key prefix, so the sweeper removes it with the upload; expires on its own.
        return bool(self.r.set(f"{self.cache_key(file_id)}:republish", "1", nx=True, ex=seconds))

    def mark_cancelled(self, file_id: str) -> bool:
        return bool(self._mark_cancelled(keys=[self.cache_key(file_id)]))

    def unmark_cached(self, file_id: str, *, owner_id: str) -> None:
        """Undo ``mark_cached`` when the StoreUpload could not be published."""
        counted = self._give_back(keys=[self._quota(owner_id), self._status(file_id)], args=[file_id])
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.cache_key(file_id), "status", UPLOADING)
        pipe.hset(self._status(file_id), "status", UPLOADING)  # the tombstone too (see _MARK_CACHED)
        pipe.expire(self._status(file_id), self.status_ttl)
        pipe.hdel(self._pending, file_id)
        if counted:
            pipe.hset(self._quota(owner_id), file_id, counted)  # reserved again, as before the transition
        pipe.execute()

    # --- the quota ledger --------------------------------------------------------
    def reserve(self, owner_id: str, upload_id: str, size: int, quota: int) -> bool:
        return bool(self._reserve(keys=[self._quota(owner_id), self._owner(owner_id)],
                                  args=[upload_id, size, quota]))

    def give_back(self, owner_id: str, upload_id: str) -> int:
        return int(self._give_back(keys=[self._quota(owner_id), self._status(upload_id)], args=[upload_id]))

    def committed_bytes(self, owner_id: str) -> int:
        return sum(int(v) for v in self.r.hvals(self._quota(owner_id)))

    def drop(self, file_id: str, chunk_count: int | None = None, owner_id: str | None = None) -> int:
        """Delete the bytes and the session (the status tombstone stays until it expires).

        A drop means the upload will not be stored (refused, cancelled, failed): its
        slot, cached-bytes budget and quota are given back. (A stored upload's cache is
        deleted by file_service_manager, not through here.)
        """
        if chunk_count is None:
            session = self.session(file_id)
            chunk_count = session["chunk_count"] if session else 0
            owner_id = owner_id or (session or {}).get("owner_id")
        keys = [*uploadkeys.cached_keys(self.cache_key(file_id), chunk_count),
                *(self._tail(file_id, i) for i in range(chunk_count))]
        removed = 0
        for start in range(0, len(keys), 1000):
            removed += self.r.delete(*keys[start:start + 1000])
        # Chunk keys beyond chunk_count cannot exist (index checks), but a scan is cheap insurance.
        stray = list(self.r.scan_iter(f"{self.cache_key(file_id)}:chunk:*", count=1000))
        if stray:
            removed += self.r.delete(*stray)
        self.r.hdel(self._pending, file_id)
        if owner_id:
            self.free_slot(owner_id, file_id)
            self.r.hdel(self._owner_bytes(owner_id), file_id)
            self.give_back(owner_id, file_id)
        return removed

    # --- retries -------------------------------------------------------------
    def claim_attempt(self, file_id: str, attempt: int, lease_seconds: float = CLAIM_LEASE_SECONDS) -> str:
        outcome = int(self._claim(keys=[self._status(file_id)],
                                  args=[attempt, self.status_ttl, max(1, int(lease_seconds * 1000))]))
        return {0: "done", 1: "claimed", 2: "busy"}[outcome]

    def finish_attempt(self, file_id: str, attempt: int) -> None:
        self._finish(keys=[self._status(file_id)], args=[attempt])

    def unclaim_attempt(self, file_id: str, attempt: int) -> None:
        self._unclaim(keys=[self._status(file_id)], args=[attempt])

    # --- load ----------------------------------------------------------------
    def pending_bytes(self) -> int:
        """Bytes of completed uploads whose cache still exists (not stored yet)."""
        entries = {_text(k): int(v) for k, v in self.r.hgetall(self._pending).items()}
        if not entries:
            return 0
        ids = list(entries)
        pipe = self.r.pipeline(transaction=False)
        for upload_id in ids:
            pipe.exists(self.cache_key(upload_id))
        alive = pipe.execute()
        gone = [u for u, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.r.hdel(self._pending, *gone)  # stored (file_service_manager dropped the cache) or expired
        return sum(entries[u] for u, ok in zip(ids, alive, strict=True) if ok)

    def used_memory(self) -> int:
        return int(self.r.info("memory").get("used_memory", 0))

    # --- sweeping ------------------------------------------------------------
    def upload_keys(self) -> Iterator[str]:
        for key in self.r.scan_iter(uploadkeys.session_pattern(self.prefix), count=1000):
            yield _text(key)

    def owner_keys(self) -> Iterable[str]:
        return (_text(k) for k in self.r.scan_iter(uploadkeys.owner_pattern(self.prefix), count=1000))

    def file_id_of(self, key: str) -> str | None:
        base = uploadkeys.session_prefix(self.prefix)
        if not key.startswith(base):
            return None
        return key[len(base):].split(":", 1)[0]

    def exists(self, key: str) -> bool:
        return bool(self.r.exists(key))

    def delete_keys(self, keys: list[str]) -> int:
        return self.r.delete(*keys) if keys else 0

    def prune_owner(self, key: str) -> int:
        """Forget the owner's slots whose upload is gone (what open_slot also does)."""
        return int(self._prune_owner(keys=[key], args=[time.time(), self.start_grace,
                                                       uploadkeys.session_prefix(self.prefix)]))
