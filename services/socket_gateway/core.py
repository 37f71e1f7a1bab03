"""The gateway's pure logic: rooms, payload checks, error mapping, where a catch-up starts.

No I/O here: app.py and worker.py call these with what they read from the
socket, auth, Redis and the queues.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common import errors, timeutil, validation
from services.common.authclient import Identity
from services.common.contracts import FileStatusChanged, GroupChanged, ResultPublished
from services.common.errors import ApiError

ADMINS_ROOM = "admins"

def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An acknowledgement carrying SPEC's error."""
    return ApiError.of(code, message, **extra).body()


def unavailable(service: str, retry_after: int = 2) -> ApiError:
    # A dependency that does not answer is transient from the client's view: "overloaded" with
    # retry_after is the SPEC code clients already retry on.
    return errors.overloaded(f"{service} is unavailable; try again", retry_after)


def error_from_http(status: int, body: Any, service: str) -> ApiError:
    """Carry a service's SPEC error (code, message, retry_after) through to the socket."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = err.get("message") if isinstance(err.get("message"), str) else None
        extra = {k: v for k, v in err.items() if k not in ("code", "message")}
    else:
        code, message, extra = None, None, {}
    if status >= 500:
        # Whatever a failing service calls it (internal_error, unavailable, ...), the socket
        # gets a SPEC code the clients retry on.
        return unavailable(service)
    code = code or errors.code_for(status)
    if code == "overloaded" and "retry_after" not in extra:
        extra["retry_after"] = 1
    return ApiError(status, code, message or f"{service} answered {status}", **extra)


# --- rooms ----------------------------------------------------------------------------------


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def token_room(token_id: str) -> str:
    return f"token:{token_id}"


def pool_room(pool_id: str) -> str:
    return f"pool:{pool_id}"


def rooms_for(identity: Identity) -> list[str]:
    rooms = [user_room(identity.user_id)]
    if identity.token_id:
        rooms.append(token_room(identity.token_id))
    if identity.is_admin:
        rooms.append(ADMINS_ROOM)
    rooms.extend(pool_room(p) for p in sorted(identity.pools))
    return rooms


def file_status_rooms(owner_id: str) -> list[str]:
    # Never a broadcast: the owner's sockets and the admins', nobody else's.
    return [user_room(owner_id), ADMINS_ROOM]


# --- session ----------------------------------------------------------------------------------


def identity_to_session(identity: Identity, token: str) -> dict[str, Any]:
    """What a socket keeps of the token it connected (or reauthed) with.

    ``expires_at`` and ``issued_at`` are /auth/validate's answer; when it leaves them out, the
    JWT's own ``exp`` / ``iat`` read unverified: auth has just validated this very token,
    signature included.
    """
    claims = jwt_claims(token)
    expires_at = identity.expires_at if identity.expires_at is not None else _number(claims, "exp")
    issued_at = identity.issued_at if identity.issued_at is not None else token_issued_at(token)
    return {"user_id": identity.user_id, "user_name": identity.user_name, "role": identity.role,
            "pools": dict(identity.pools), "token_id": identity.token_id, "token": token,
            "expires_at": expires_at, "issued_at": issued_at, "session_id": identity.session_id}


# A JWT payload is ~300 bytes; anything longer is not read (tokens are capped by auth anyway).
MAX_TOKEN_PAYLOAD = 8192


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT already validated by auth (``{}`` when it is not one)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > MAX_TOKEN_PAYLOAD:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(claims: Mapping[str, Any], key: str) -> float | None:
    value = claims.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def token_issued_at(token: str) -> float | None:
    """The ``iat_ms``/``iat`` claim of a JWT already validated by auth, or None (not a JWT)."""
    claims = jwt_claims(token)
    at_ms = _number(claims, "iat_ms")
    return at_ms / 1000.0 if at_ms is not None else _number(claims, "iat")


def identity_from_session(session: Mapping[str, Any]) -> Identity:
    return Identity(user_id=session["user_id"], user_name=session["user_name"], role=session["role"],
                    pools=dict(session.get("pools") or {}), token_id=session.get("token_id"))


# --- payloads ------------------------------------------------------------------------------


def _obj(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise errors.bad_request("the payload must be an object")
    return payload


check_id = validation.check_id


def start_transfer_request(payload: Any, identity: Identity, writer: str,
                           max_skew: float = validation.MAX_CLOCK_SKEW_SECONDS) -> dict[str, Any]:
    """The body of file_uploader's ``POST /uploads``: identity from the session, never the payload.

    ``max_skew``: SPEC's MAX_CLOCK_SKEW_SECONDS (``CommonSettings``); a timestamp further ahead is
    refused here, before a round trip (file_uploader checks it again with the pool's max_late)."""
    data = _obj(payload)
    body: dict[str, Any] = {"owner_id": identity.user_id, "owner_name": identity.user_name,
                            "is_admin": identity.is_admin, "writer": writer}
    if "file_id" in data and data["file_id"] is not None:
        body["file_id"] = check_id(data["file_id"], "file_id")
    name = data.get("file_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise errors.bad_request("file_name must be a non-empty string of at most 255 characters")
    body["file_name"] = name
    body["size"] = validation.check_int(data.get("size"), "size")
    if data.get("content_type") is not None:
        if not isinstance(data["content_type"], str) or len(data["content_type"]) > 255:
            raise errors.bad_request("content_type must be a string")
        body["content_type"] = validation.check_content_type(data["content_type"])
    if data.get("sha256") is not None:
        body["sha256"] = validation.check_sha256(data["sha256"])
    if data.get("pool_id") is not None:
        body["pool_id"] = check_id(data["pool_id"], "pool_id")
    if data.get("timestamp") is not None:
        body["timestamp"] = validation.check_event_time(data["timestamp"], "timestamp", max_skew=max_skew)
    if data.get("items") is not None:
        items = data["items"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise errors.bad_request("items must be a list of {timestamp, offset, length, name?}")
        body["items"] = items
    if data.get("metadata") is not None:
        if not isinstance(data["metadata"], dict):
            raise errors.bad_request("metadata must be an object")
        body["metadata"] = validation.check_metadata(data["metadata"])
    return body


def write_chunk_request(payload: Any, max_chunk_bytes: int) -> tuple[str, int, bytes, str | None]:
    data = _obj(payload)
    file_id = check_id(data.get("file_id"), "file_id")
    index = validation.check_int(data.get("index"), "index")
    chunk = data.get("data")
    if isinstance(chunk, bytearray | memoryview):
        chunk = bytes(chunk)
    if not isinstance(chunk, bytes):
        raise errors.bad_request("data must be bytes (a binary attachment)")
    if len(chunk) > max_chunk_bytes:
        raise errors.too_large(f"a chunk may hold at most {max_chunk_bytes} bytes")
    sha = data.get("sha256")
    return file_id, index, chunk, (None if sha is None else validation.check_sha256(sha))


# auth's tokens are ~350 characters (auth refuses more than 4,096).
MAX_TOKEN_CHARS = 8192


def reauth_request(payload: Any) -> str:
    token = _obj(payload).get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise errors.bad_request(f"token must be a non-empty string of at most {MAX_TOKEN_CHARS} characters")
    return token


def file_id_request(payload: Any) -> str:
    return check_id(_obj(payload).get("file_id"), "file_id")


# pool_aggregator's page bounds (SPEC get-results: default 100).
DEFAULT_RESULTS_PAGE, MAX_RESULTS_PAGE = 100, 1000
# A seq fits a 64-bit database field.
MAX_SEQ = 10**18 - 1


def _seq(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise errors.bad_request(f"{name} must be an integer in [0, {MAX_SEQ}]")
    return value


@dataclass(frozen=True)
class ResultsQuery:
    pool_id: str
    since: str | None = None
    after_seq: int | None = None
    limit: int = DEFAULT_RESULTS_PAGE


def results_request(payload: Any) -> ResultsQuery:
    """SPEC's get-results ``{pool_id, since?, after_seq?, limit?}``."""
    data = _obj(payload)
    pool_id = check_id(data.get("pool_id"), "pool_id")
    since = data.get("since")
    after = data.get("after_seq")
    limit = data.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or not 1 <= limit <= MAX_RESULTS_PAGE):
        raise errors.bad_request(f"limit must be an integer in [1, {MAX_RESULTS_PAGE}]")
    return ResultsQuery(pool_id, validation.check_timestamp(since, "since") if since is not None else None,
                        _seq(after, "after_seq") if after is not None else None,
                        DEFAULT_RESULTS_PAGE if limit is None else limit)


def ack_request(payload: Any) -> tuple[str, int]:
    """SPEC's ack-result ``{pool_id, seq}``."""
    data = _obj(payload)
    return check_id(data.get("pool_id"), "pool_id"), _seq(data.get("seq"), "seq")


# --- catch-up on connect ---------------------------------------------------------------------


def results_after_from_auth(auth: Any, pools: list[str]) -> dict[str, int]:
    """What the client says it already has: ``results_after`` ``{pool_id: seq}`` in the connect
    payload (the last seq its feed saved, maybe ahead of its acks). Only shortens the catch-up
    (the larger of it and the stored ack wins); bad values and other pools are ignored."""
    if not isinstance(auth, Mapping):
        return {}
    given = auth.get("results_after")
    if not isinstance(given, Mapping):
        return {}
    out: dict[str, int] = {}
    for pool_id, value in list(given.items())[:len(pools) + 16]:  # bounded walk of a client's dict
        if str(pool_id) in pools and isinstance(value, int) and not isinstance(value, bool) \
                and 0 <= value <= MAX_SEQ:
            out[str(pool_id)] = value
    return out


@dataclass(frozen=True)
class CatchUpStart:
    """Where a member's catch-up in one pool starts: results after ``after_seq`` (and, for a member
    that never acknowledged one, created after ``since``: when it joined the pool)."""

    after_seq: int
    since: str | None


def catch_up_start(acked: int | None, client_after: int | None, joined: float | None) -> CatchUpStart:
    """SPEC: every result after the last acknowledged seq; a member that never acknowledged gets
    those created since it joined (all of them when auth does not say when: never fewer)."""
    if acked is not None or client_after is not None:
        return CatchUpStart(max(acked or 0, client_after or 0), None)
    if joined is None:
        return CatchUpStart(0, None)
    try:
        return CatchUpStart(0, timeutil.iso(datetime.fromtimestamp(joined, UTC)))
    except (OverflowError, OSError, ValueError):  # a time out of datetime's range: all of them
        return CatchUpStart(0, None)


# --- notifications -------------------------------------------------------------------------


def file_status_event(message: FileStatusChanged) -> dict[str, Any]:
    payload: dict[str, Any] = {"file_id": message.file_id, "status": message.status}
    if message.attempt is not None:
        payload["attempt"] = message.attempt
    if message.reason is not None:
        payload["reason"] = message.reason
    if message.pool_id is not None:
        payload["pool_id"] = message.pool_id
    if message.file_name is not None:
        payload["file_name"] = message.file_name
    return payload


def group_status_event(message: GroupChanged) -> dict[str, Any]:
    """SPEC's group-status payload (reason and short only when set)."""
    payload: dict[str, Any] = {"pool_id": message.pool_id, "group_id": message.group_id, "status": message.status}
    if message.reason is not None:
        payload["reason"] = message.reason
    if message.short is not None:
        payload["short"] = message.short
    return payload


def group_status_rooms(pool_id: str) -> list[str]:
    # The pool's members and every connected admin; a socket in both gets it once (python-socketio
    # emits to the union of the rooms).
    return [pool_room(pool_id), ADMINS_ROOM]


RESULT_EVENT_KEYS = ("pool_id", "group_id", "result_id", "seq", "file_name", "size", "sha256", "download_url")


def pool_result_event(result: ResultPublished | Mapping[str, Any]) -> dict[str, Any]:
    """SPEC's pool-result payload from the event or from a result record (extra keys kept)."""
    doc = result.to_dict() if isinstance(result, ResultPublished) else dict(result)
    payload = {k: doc.get(k) for k in RESULT_EVENT_KEYS}
    for extra in ("window_start", "window_end", "created"):
        if doc.get(extra) is not None:
            payload[extra] = doc[extra]
    return payload
