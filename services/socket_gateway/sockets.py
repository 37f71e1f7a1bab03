"""The socket events' use cases: plain functions of ``(deps, session, payload)``.

``events.py`` maps each SPEC event name to one of these and hands it the socket's
session; these check the payload (core), call the owning service (ports), answer.
Identity lives in the session (set at connect from auth), never in a payload.
Every event answers through its ack: the result, or SPEC's error shape (``answer``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common import errors, logs, timeutil
from services.common.authclient import AuthUnavailable, Identity
from services.common.errors import ApiError

from . import core, guard
from .deps import Deps

log = logging.getLogger("services.socket_gateway")

# How long a catch-up waits for python-socketio to finish the CONNECT handshake.
CONNECTED_WAIT_SECONDS = 5.0
# How often a catch-up looks whether the socket's queue of unsent packets went down.
DRAIN_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Session:
    """One socket as an event sees it: its sid and what connect saved (``{}`` before that)."""

    sid: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def identity(self) -> Identity:
        if "user_id" not in self.data:
            raise errors.unauthorized("this socket has no identity; reconnect with a token")
        return core.identity_from_session(self.data)

    @property
    def token(self) -> str:
        self.identity()
        return str(self.data["token"])


class ConnectRefused(Exception):
    """The connect is refused with SPEC's error (python-socketio's ConnectionRefusedError in events.py)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.data: dict[str, Any] = {"code": code, "message": message, **extra}


Event = Callable[[Deps, Session, Any], dict[str, Any]]

# The one event a socket whose token expired or was revoked may still send (SPEC token-expired).
UNCHECKED_EVENTS = frozenset({"reauth"})

# Events whose answer is large: up to 1,000 records (file_service_manager's and pool_aggregator's
# largest page), ~2.5 MiB as text, parsed objects and the ack. Counted as in-flight bytes at
# admission, so GATEWAY_MAX_INFLIGHT_BYTES* bound their answers too (OPERATIONS.md "Gateway memory").
ANSWER_RESERVE_BYTES = {"get-history": 4 * 1024 * 1024, "get-results": 4 * 1024 * 1024}


def answer(deps: Deps, name: str, event: Event, session: Callable[[], Session], sid: str,
           payload: Any) -> dict[str, Any]:
    """Run one event within the in-flight bounds; every outcome is an ack (result or SPEC error)."""
    metrics = deps.metrics
    size = payload_bytes(payload) + ANSWER_RESERVE_BYTES.get(name, 0)
    if not deps.local.enter(sid, size):
        # Refused before any work: the event's payload (a chunk holds megabytes) is dropped now
        # instead of waiting, with thousands of others, for its turn.
        metrics.events.labels(name, "overloaded").inc()
        return core.error("overloaded", "too many requests in flight; wait for their answers", retry_after=1)
    try:
        with logs.bound(sid=sid, event=name):
            try:
                current = session()
                if name not in UNCHECKED_EVENTS:
                    guard.check(deps, sid, current.data)
                ack = event(deps, current, payload)
                metrics.events.labels(name, "ok").inc()
                return ack
            except ApiError as err:
                metrics.events.labels(name, err.code).inc()
                return err.body()
            except Exception:  # noqa: BLE001 - the socket gets an answer, the log the trace
                log.exception("socket event failed")
                metrics.events.labels(name, "internal_error").inc()
                # SPEC's socket codes are a closed list: a transient "try again" is overloaded.
                return core.error("overloaded", "the gateway failed to answer; try again", retry_after=1)
    finally:
        deps.local.leave(sid, size)


# Nodes payload_bytes looks at: a payload is one WebSocket message (capped), so this only bounds
# the walk's time; nodes past it count at the average so far.
SIZE_WALK_NODES = 10_000


def payload_bytes(payload: Any) -> int:
    """About how many bytes an event's payload holds: its bytes and strings, plus 16 per node."""
    total, nodes, stack = 0, 0, [payload]
    while stack and nodes < SIZE_WALK_NODES:
        node = stack.pop()
        nodes += 1
        if isinstance(node, bytes | bytearray | memoryview | str):
            total += len(node)
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        total += 16
    return total + (total // nodes) * len(stack) if stack else total


def fresh_identity(deps: Deps, session: Session) -> Identity:
    """Ask auth now: memberships and revocations as of this moment (every pool event does)."""
    try:
        found = deps.auth.validate(session.token)
    except AuthUnavailable as exc:
        raise core.unavailable("auth") from exc
    if found is None:
        raise guard.refused(deps, session.sid, session.data)
    return found


# --- connection ------------------------------------------------------------------------------


def connect(deps: Deps, session: Session, auth: Any) -> None:
    """Check the token with auth, save the identity, join the rooms, start the catch-up."""
    sid, metrics = session.sid, deps.metrics
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        metrics.connects.labels("unauthorized").inc()
        raise ConnectRefused("unauthorized", "connect with auth {\"token\": ...}")
    try:
        identity = deps.auth.validate(token)
    except AuthUnavailable as exc:
        metrics.connects.labels("auth_unavailable").inc()
        log.warning("auth unavailable at connect", extra={"error": str(exc)})
        raise ConnectRefused("overloaded", "auth is unavailable; try again", retry_after=2) from exc
    if identity is None:
        metrics.connects.labels("unauthorized").inc()
        raise ConnectRefused("unauthorized", "invalid or expired token")
    saved = core.identity_to_session(identity, token)
    deps.sockets.save_session(sid, saved)
    # The pool rooms first, the catch-up after: a result published meanwhile comes live (maybe
    # also in the catch-up: the client drops the duplicate by seq), never nowhere.
    for room in core.rooms_for(identity):
        deps.sockets.enter_room(sid, room)
    deps.local.connected(sid, saved.get("expires_at"))
    metrics.connects.labels("ok").inc()
    metrics.connected.inc()
    log.info("socket connected", extra={"sid": sid, "user_id": identity.user_id})
    pools = sorted(identity.pools)
    client_after = core.results_after_from_auth(auth, pools)
    # After connect returns python-socketio sends the CONNECT packet; the catch-up must follow
    # it, so it goes out from a task of its own.
    start_catch_up(deps, sid, identity, client_after)


def start_catch_up(deps: Deps, sid: str, identity: Identity, client_after: dict[str, int]) -> None:
    if not identity.pools:
        return
    number = deps.local.catch_up_started(sid)
    deps.metrics.catchups.inc()
    deps.sockets.start_background_task(catch_up, deps, sid, number, identity.user_id, sorted(identity.pools),
                                       client_after, dict(identity.joined))


def catch_up(deps: Deps, sid: str, number: int, user_id: str, pools: list[str], client_after: dict[str, int],
             joined: dict[str, float]) -> int:
    """SPEC's catch-up on connect: every result of the member's pools after its last acknowledged
    seq (since it joined, when it never acknowledged one), all of them, in seq order, a page at a
    time. Returns how many were sent."""
    try:
        return _catch_up(deps, sid, number, user_id, pools, client_after, joined)
    finally:
        deps.metrics.catchups.dec()


def _catch_up(deps: Deps, sid: str, number: int, user_id: str, pools: list[str], client_after: dict[str, int],
              joined: dict[str, float]) -> int:
    deadline = time.monotonic() + CONNECTED_WAIT_SECONDS
    while not deps.sockets.is_connected(sid):
        if time.monotonic() > deadline or not deps.local.may_catch_up(sid, number):
            return 0
        deps.sockets.sleep(0.02)
    # A page of results is held per catch-up: a few at a time per process (Settings.max_catchups);
    # the others wait here holding nothing.
    with deps.local.deliveries:
        sent = 0
        for pool_id in pools:
            sent += _catch_up_pool(deps, sid, number, user_id, pool_id, client_after.get(pool_id),
                                   joined.get(pool_id))
        return sent


def _catch_up_pool(deps: Deps, sid: str, number: int, user_id: str, pool_id: str, client_after: int | None,
                   joined: float | None) -> int:
    if not deps.local.may_catch_up(sid, number):  # gone (or expired) while it waited for its turn
        return 0
    try:
        acked = deps.results.acked(pool_id, user_id)
    except ApiError as err:
        if client_after is None:
            # Unknown start: nothing is guessed. The client sees the gap at the next result and
            # fills it with get-results; its next connect catches up in full.
            log.warning("acks unreadable; no catch-up", extra={"pool_id": pool_id, "code": err.code})
            return 0
        acked = None
    start = core.catch_up_start(acked, client_after, joined)
    after, sent, settings = start.after_seq, 0, deps.settings
    while deps.local.may_catch_up(sid, number):
        # The socket's current token (a reauth may have replaced it while this ran).
        token = deps.sockets.get_session(sid).get("token")
        if not isinstance(token, str):
            break
        try:
            page = deps.results.results(pool_id, token, start.since, after, settings.catchup_page)
        except ApiError as err:
            log.warning("catch-up failed", extra={"pool_id": pool_id, "code": err.code, "after_seq": after})
            break
        results = [r for r in page.get("results") or [] if isinstance(r, dict)]
        for result in results:
            deps.sockets.emit_local("pool-result", core.pool_result_event(result), sid)
        if results:
            deps.metrics.emits.labels("pool-result").inc(len(results))
            # One record per page (a catch-up may send thousands): what went to whom, which seqs.
            deps.audit.record("result_delivered", actor=user_id, file_id=results[-1].get("result_id"),
                              pool_id=pool_id, delivery="on_connect", count=len(results),
                              first_seq=results[0].get("seq"), last_seq=results[-1].get("seq"))
            sent += len(results)
        next_seq = page.get("next_seq")
        if not page.get("more") or not isinstance(next_seq, int) or next_seq <= after:
            break
        after = next_seq
        if not _drained(deps, sid, number):
            log.warning("catch-up stopped: the socket does not read", extra={"pool_id": pool_id, "after_seq": after})
            break
    return sent


def _drained(deps: Deps, sid: str, number: int) -> bool:
    """Wait until at most ``catchup_backlog`` packets wait to be written to the socket (so one
    catch-up holds about a page, not the whole feed, in the socket's queue); False if that takes
    longer than ``catchup_drain_seconds`` or the catch-up must stop."""
    settings = deps.settings
    deadline = time.monotonic() + settings.catchup_drain_seconds
    while deps.sockets.backlog(sid) > settings.catchup_backlog:
        if time.monotonic() > deadline or not deps.local.may_catch_up(sid, number):
            return False
        deps.sockets.sleep(DRAIN_POLL_SECONDS)
    return True


def disconnect(deps: Deps, session: Session, reason: Any = None) -> None:
    """Release the socket's writer locks (a catch-up it had stops at its next page)."""
    sid = session.sid
    deps.metrics.connected.dec()
    for file_id in deps.local.gone(sid):
        try:
            deps.uploader.release(file_id, writer=sid)
        except ApiError as err:
            # The writer lock expires on its own; the client's resume then waits for that.
            log.info("release failed", extra={"file_id": file_id, "code": err.code})
    log.info("socket disconnected", extra={"sid": sid, "reason": str(reason)})


# --- events ------------------------------------------------------------------------------------


def start_transfer(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    identity = session.identity()
    body = core.start_transfer_request(payload, identity, writer=session.sid,
                                       max_skew=deps.settings.common.max_clock_skew_seconds)
    if "pool_id" in body:
        # Memberships change: the session's copy is as old as the socket, so ask auth now.
        identity = _contributor(deps, session, body["pool_id"])
        body.update(owner_id=identity.user_id, owner_name=identity.user_name, is_admin=identity.is_admin)
    ack = deps.uploader.start(body)
    file_id = ack.get("file_id")
    # A resumed upload's pool is file_uploader's word (the payload may leave it out or lie).
    pool_id = ack.pop("pool_id", None) or body.get("pool_id")
    if isinstance(file_id, str):
        if isinstance(pool_id, str) and pool_id != body.get("pool_id"):
            try:
                _contributor(deps, session, pool_id)
            except ApiError:
                deps.uploader.release(file_id, writer=session.sid)  # the writer lock resume took
                raise
        deps.local.wrote(session.sid, file_id)
        if isinstance(pool_id, str):
            deps.local.pool_upload(session.sid, file_id, pool_id)
    return ack


def _contributor(deps: Deps, session: Session, pool_id: str) -> Identity:
    """The socket's identity as auth sees it now, if it may contribute to ``pool_id`` (else forbidden)."""
    identity = fresh_identity(deps, session)
    if not identity.can_contribute(pool_id):
        raise errors.forbidden("only a contributor of the pool may upload to it")
    return identity


def _check_pool_upload(deps: Deps, session: Session, file_id: str) -> None:
    """Every chunk and the completion of a pool upload: the writer must still be a contributor."""
    pool_id = deps.local.pool_of_upload(session.sid, file_id)
    if pool_id is not None:
        _contributor(deps, session, pool_id)


def write_chunk(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    identity = session.identity()
    file_id, index, chunk, sha = core.write_chunk_request(payload, deps.settings.max_chunk_bytes)
    _check_pool_upload(deps, session, file_id)
    deps.metrics.chunk_bytes.inc(len(chunk))
    ack = deps.uploader.put_chunk(file_id, index, chunk, owner_id=identity.user_id, writer=session.sid,
                                  sha256=sha)
    deps.local.wrote(session.sid, file_id)
    return ack


def complete_upload(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    identity = session.identity()
    file_id = core.file_id_request(payload)
    if deps.local.is_writing(session.sid, file_id):
        _check_pool_upload(deps, session, file_id)
    else:
        # Not started or resumed here (its writer lock may have expired): file_uploader names the
        # upload's pool (an unknown or another owner's upload is its not_found).
        pool_id = deps.uploader.describe(file_id, owner_id=identity.user_id).get("pool_id")
        if isinstance(pool_id, str):
            _contributor(deps, session, pool_id)
    ack = deps.uploader.complete(file_id, owner_id=identity.user_id, writer=session.sid)
    deps.local.finished(session.sid, file_id)
    return ack


def cancel_upload(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    """SPEC's cancel-upload: the owner's unfinished upload is dropped (file_uploader checks the owner:
    another user's upload answers not_found, a completed one conflict)."""
    identity = session.identity()
    file_id = core.file_id_request(payload)
    ack = deps.uploader.cancel(file_id, owner_id=identity.user_id)
    deps.local.finished(session.sid, file_id)  # nothing left to release on disconnect
    return {"file_id": file_id, "status": str(ack.get("status") or "cancelled")}


def get_history(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    # file_service_manager answers by the token: an admin gets everyone's files.
    found = deps.history.files(session.token)
    return {"files": found.get("files", [])}


def _member(deps: Deps, session: Session, pool_id: str, what: str) -> Identity:
    identity = session.identity()
    if not identity.is_member(pool_id):
        # The session may predate a new membership: ask auth before refusing.
        identity = fresh_identity(deps, session)
        if not identity.is_member(pool_id):
            raise errors.forbidden(f"only members of the pool may {what}")
    return identity


def get_results(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    """SPEC's get-results: a page ``{results, next_seq, more}`` of the pool's feed, oldest first."""
    query = core.results_request(payload)
    _member(deps, session, query.pool_id, "read its results")
    found = deps.results.results(query.pool_id, session.token, query.since, query.after_seq, query.limit)
    results = found.get("results") or []
    next_seq = found.get("next_seq")
    return {"results": results, "next_seq": next_seq if isinstance(next_seq, int) else (query.after_seq or 0),
            "more": bool(found.get("more"))}


def ack_result(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    """SPEC's ack-result: the member has every result up to ``seq``; kept by pool_aggregator (forward
    only, never past the pool's last result), where the next connect's catch-up starts."""
    pool_id, seq = core.ack_request(payload)
    identity = _member(deps, session, pool_id, "acknowledge its results")
    found = deps.results.ack(pool_id, identity.user_id, seq)
    acked = found.get("acked_seq")
    return {"pool_id": pool_id, "acked_seq": acked if isinstance(acked, int) else seq}


def reauth(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    """SPEC's reauth: a new access token of the same user replaces the socket's; rooms follow it."""
    old = session.identity()
    token = core.reauth_request(payload)
    try:
        new = deps.auth.validate(token)
    except AuthUnavailable as exc:
        raise core.unavailable("auth") from exc
    if new is None:
        raise errors.unauthorized("invalid or expired token")
    if new.user_id != old.user_id:
        raise errors.forbidden("the token belongs to another user")
    sid = session.sid
    saved = core.identity_to_session(new, token)
    expires_at = saved.get("expires_at")
    if isinstance(expires_at, int | float) and expires_at <= time.time():
        raise errors.unauthorized("invalid or expired token")
    was_expired = deps.local.is_expired(sid)
    deps.sockets.save_session(sid, saved)
    # In its grace the socket had left every room (guard.expire); otherwise only the difference
    # moves (a new token room, pools joined or left, admins on a promotion).
    before = set() if was_expired else set(core.rooms_for(old))
    after = set(core.rooms_for(new))
    for room in sorted(before - after):
        deps.sockets.leave_room(sid, room)
    for room in sorted(after - before):
        deps.sockets.enter_room(sid, room)
    deps.local.renewed(sid, expires_at)
    if was_expired:
        # What its pools published while it was out of the rooms: a catch-up from its acks.
        start_catch_up(deps, sid, new, {})
    log.info("socket reauthed", extra={"sid": sid, "user_id": new.user_id, "was_expired": was_expired})
    expires_in = max(0, int(expires_at - time.time())) if isinstance(expires_at, int | float) else None
    return {"ok": True, "expires_in": expires_in}


def alive(deps: Deps, session: Session, payload: Any) -> dict[str, Any]:
    session.identity()
    return {"ok": True, "server_time": timeutil.now_iso()}
