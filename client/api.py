"""A Python client of File Dropbox: auth over HTTP, uploads and notifications over Socket.IO.

Used by the CLI (``python -m client``), the tests, the pool simulator and the benchmark.

- Uploads stream the file from disk in ``chunk_size`` pieces (never the whole file in
  memory), with a window of chunks in flight (acks pipelined, not one round trip each),
  a sha256 per chunk and, in a first streaming pass, of the whole file.
- ``overloaded`` answers are waited out (``retry_after``) and retried.
- A dropped connection is survived: python-socketio reconnects, and the upload resumes
  with ``start-transfer {file_id}``, which answers the ``missing`` chunks to send again.
- ``pool-result`` events go through a ``ResultFeed`` (client/feed.py): each pool's results reach
  the application once each, in ``seq`` order, across reconnects, gateways and restarts (its
  state file, ``feed_state``, ``<spool>.feed.json`` beside the spool by default). A gap (a seq
  missing while later ones came) that does not close by itself within ``gap_wait`` is filled with ``get-results
  {after_seq}``; every ``poll_seconds`` a quiet pool is asked for anything newer (a lost last
  result has no later one to reveal it). What the application finished is acknowledged with
  ``ack-result`` (a second apart at most), so the next connect's catch-up starts after it.
  Results without ``seq`` (an older gateway) are deduplicated by ``result_id``.
- Tokens renew themselves: signup/login keep the refresh token; an HTTP call answered 401
  refreshes once (``refresh()``, POST /auth/refresh, one at a time: a rotated refresh token
  presented twice would end the login) and retries, downloads included; a (re)connect with an
  access token about to expire refreshes first, and a connect refused ``unauthorized``
  refreshes and tries again. An open socket sends ``reauth`` with a fresh token before the
  access token expires (a third of its lifetime before, at most a minute) and at once on
  ``token-expired``; an upload's event refused ``unauthorized`` (the token expired first) reauths
  and the upload goes on (resumed). So ``python -m client listen`` outlives its access tokens,
  for months.
- websocket-client masks outgoing frames with wsaccel's C code when it is installed
  (it is a dependency); ``wsaccel_active()`` tells.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

import requests
import socketio

from .feed import GAP, NEW, ResultFeed
from .spool import OfflineSpool, batches

log = logging.getLogger(__name__)


def _now_iso() -> str:
    """Now, ISO 8601 UTC: the timestamp of an update produced at this moment."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


STATUS_ORDER = {"cached": 0, "retrying": 1, "uploaded_successfully": 2, "upload_failed": 3}
READ_BLOCK = 1024 * 1024


class DropboxError(Exception):
    """An error answered by the fleet: ``code`` is SPEC's (``unauthorized``, ``forbidden``, ...)."""

    def __init__(self, code: str, message: str = "", **extra: Any) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def retry_after(self) -> float | None:
        value = self.extra.get("retry_after")
        return float(value) if isinstance(value, int | float) else None

    @classmethod
    def from_body(cls, body: Any, status: int | None = None) -> DropboxError:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            extra = {k: v for k, v in err.items() if k not in ("code", "message")}
            return cls(str(err.get("code", "error")), str(err.get("message", "")), status=status, **extra)
        return cls("error", f"unexpected answer (HTTP {status})", status=status)


class UploadFailed(DropboxError):
    """The fleet gave up storing an upload (status ``upload_failed``)."""


class ConnectionLost(DropboxError):
    """The socket dropped (or acks stopped coming) while waiting for an answer."""

    def __init__(self, message: str = "the connection to the gateway was lost") -> None:
        super().__init__("connection_lost", message)


def refusal_error(data: Any, fallback: str) -> DropboxError:
    """The DropboxError of a refused Socket.IO connection."""
    inner = data.get("data") if isinstance(data, dict) else None
    if isinstance(inner, dict) and "code" in inner:
        extra = {k: v for k, v in inner.items() if k not in ("code", "message")}
        return DropboxError(str(inner["code"]), str(inner.get("message", "")), **extra)
    return DropboxError("connection_failed", fallback)


def wsaccel_active() -> bool:
    """True when websocket-client masks frames with wsaccel's C masker."""
    from websocket import _abnf

    return "XorMaskerSimple" in vars(_abnf)


def sha256_of(fileobj: BinaryIO) -> str:
    digest = hashlib.sha256()
    fileobj.seek(0)
    for block in iter(lambda: fileobj.read(READ_BLOCK), b""):
        digest.update(block)
    fileobj.seek(0)
    return digest.hexdigest()


class DropboxClient:
    """One user's connection to the fleet. Thread-safe for event collection; one upload
    at a time per thread (several threads may upload at once over the one socket)."""

    def __init__(self, gateway_url: str = "http://127.0.0.1:5000", auth_url: str | None = None,
                 fsm_url: str | None = None, aggregator_url: str | None = None, *, timeout: float = 30.0,
                 window: int = 4, max_resumes: int = 20, spool_dir: str | os.PathLike | None = None,
                 auto_flush: bool = True, feed_state: str | os.PathLike | None = None,
                 confirm_results: bool = False, gap_wait: float = 2.0, poll_seconds: float = 60.0,
                 keep_received: bool = True) -> None:
        """``feed_state``: the result feed's state file (default: ``<spool_dir>.feed.json`` beside
        ``spool_dir``, one per spool even when spools share a parent; none without a spool).
        ``confirm_results``: a result counts as received (saved, acknowledged)
        only once the application calls ``result_done``; else once handed to it (``wait_result``).
        ``keep_received``: also keep every result in ``results_received`` (tests, short runs); a
        client that runs for months (``listen``) says False, so only ``wait_result``'s queue holds
        results, until the application takes them."""
        self.gateway_url = gateway_url.rstrip("/")
        # Updates produced while offline wait here and go as one batch per pool on reconnect.
        self.spool = OfflineSpool(spool_dir) if spool_dir is not None else None
        self.auto_flush = auto_flush  # flush the spool in the background on every (re)connect
        self._flush_lock = threading.Lock()
        self.timeout = timeout
        self.window = max(1, window)
        self.max_resumes = max_resumes
        self.http = requests.Session()
        self._urls = {"auth_url": auth_url, "file_service_manager_url": fsm_url,
                      "pool_aggregator_url": aggregator_url}
        self.token: str | None = None
        # Rotated by every refresh (SPEC: each works once; presenting a used one ends the login).
        self.refresh_token: str | None = None
        self.token_expires_at: float | None = None  # time.time() when the access token expires
        # One refresh at a time: two threads refreshing with the same refresh token would be a
        # reuse, and auth would end the whole login.
        self._refresh_lock = threading.Lock()
        self.user: dict[str, Any] | None = None
        self.sio: socketio.Client | None = None
        self._results_since: Any = None
        self._cond = threading.Condition()
        self._generation = 0  # bumped on each (re)connect: a waiter can tell its socket went away
        self._connected = False
        self.statuses: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.results_received: list[dict[str, Any]] = []
        self._result_ids: set[str] = set()
        self._result_queues: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.duplicate_results = 0
        self.keep_received = keep_received
        if feed_state is None and spool_dir is not None:
            spool = Path(spool_dir)
            feed_state = spool.with_name(spool.name + ".feed.json")
        self.feed = ResultFeed(feed_state, confirm=confirm_results)
        self.gap_wait = gap_wait
        self.poll_seconds = poll_seconds
        self.token_ttl: float | None = None  # the access token's lifetime (expires_in), for reauth timing
        self.watch_pools: set[str] = set()  # pools the keeper polls (seen in results, or watch())
        self.acked: dict[str, int] = {}  # per pool, the last seq ack-result answered
        self.reauths = self.gap_fills = 0
        self._wake = threading.Event()  # token-expired or a gap: the keeper acts now
        self._token_expired = False
        self._refused_unauthorized = False  # the last connect was refused: refresh before the next
        self._keeper: threading.Thread | None = None
        self._server_cut = False  # the gateway itself closed the socket: the keeper reopens it
        self._stop = threading.Event()

    # --- URLs ------------------------------------------------------------------------------

    def _url(self, key: str) -> str:
        if not self._urls.get(key):
            config = self.http.get(f"{self.gateway_url}/config.json", timeout=self.timeout)
            if config.status_code == 404:
                # The production ingress does not route /config.json: every service is on the gateway's origin.
                values = {name: self.gateway_url for name in self._urls}
            else:
                config.raise_for_status()
                values = config.json()
            for name, value in values.items():
                if name in self._urls and not self._urls[name]:
                    self._urls[name] = value
        return str(self._urls[key]).rstrip("/")

    @property
    def auth_url(self) -> str:
        return self._url("auth_url")

    @property
    def fsm_url(self) -> str:
        return self._url("file_service_manager_url")

    @property
    def aggregator_url(self) -> str:
        return self._url("pool_aggregator_url")

    def _bearer(self) -> dict[str, str]:
        if not self.token:
            raise DropboxError("unauthorized", "log in first")
        return {"Authorization": f"Bearer {self.token}"}

    def _json(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict):
            raise DropboxError.from_body(body, response.status_code)
        return body

    # --- auth ------------------------------------------------------------------------------

    def _keep(self, body: dict[str, Any]) -> None:
        """Keep the tokens of a signup, login or refresh answer."""
        self.token = body["access_token"]
        self.refresh_token = body.get("refresh_token") or self.refresh_token
        expires_in = body.get("expires_in")
        self.token_expires_at = time.time() + float(expires_in) if isinstance(expires_in, int | float) else None
        self.token_ttl = float(expires_in) if isinstance(expires_in, int | float) else None

    def signup(self, user_name: str, password: str) -> dict[str, Any]:
        body = self._json(self.http.post(f"{self.auth_url}/auth/signup",
                                         json={"user_name": user_name, "password": password},
                                         timeout=self.timeout))
        self._keep(body)
        self.user = body
        return body

    def login(self, user_name: str, password: str) -> dict[str, Any]:
        body = self._json(self.http.put(f"{self.auth_url}/auth/login/{user_name}",
                                        json={"password": password}, timeout=self.timeout))
        self._keep(body)
        self.user = body
        return body

    def refresh(self) -> dict[str, Any]:
        """SPEC's POST /auth/refresh: a new access token and the next refresh token (rotated)."""
        with self._refresh_lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> dict[str, Any]:
        if not self.refresh_token:
            raise DropboxError("unauthorized", "no refresh token: log in first")
        body = self._json(self.http.post(f"{self.auth_url}/auth/refresh",
                                         json={"refresh_token": self.refresh_token}, timeout=self.timeout))
        self._keep(body)
        return body

    def _renew(self, refused_token: str | None) -> bool:
        """After a 401 for ``refused_token``: refresh once (unless another thread already did);
        True when there is a new token to retry with."""
        with self._refresh_lock:
            if self.token != refused_token:
                return self.token is not None  # renewed meanwhile by another thread
            if not self.refresh_token:
                return False
            try:
                self._refresh_locked()
            except DropboxError:
                return False  # the login ended (logout, reuse, disabled user): the 401 stands
            return True

    def _authed(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """An HTTP call with the Bearer token; a 401 refreshes the token once and retries."""
        extra = kwargs.pop("headers", None) or {}
        token = self.token
        response = self.http.request(method, url, headers={**extra, **self._bearer()}, **kwargs)
        if response.status_code != 401 or not self._renew(token):
            return response
        response.close()
        return self.http.request(method, url, headers={**extra, **self._bearer()}, **kwargs)

    def token_expiring(self, margin: float = 30.0) -> bool:
        return self.token_expires_at is not None and time.time() > self.token_expires_at - margin

    def logout(self) -> None:
        if not self.token or not self.user:
            return
        self._json(self._authed("PUT", f"{self.auth_url}/auth/logout/{self.user['user_name']}",
                                timeout=self.timeout))
        self.disconnect()
        self.token = self.refresh_token = None

    # --- socket ----------------------------------------------------------------------------

    def _auth_payload(self) -> dict[str, Any]:
        # Called by python-socketio on every (re)connect: a token about to expire, or one the last
        # connect was refused with, is renewed first, so a reconnect after hours away is not refused.
        if self.refresh_token and (self.token_expiring(self.reauth_margin()) or self._refused_unauthorized):
            self._refused_unauthorized = False
            self._renew(self.token)
        payload: dict[str, Any] = {"token": self.token}
        if self._results_since is not None:
            payload["results_since"] = self._results_since
        # What the feed already has: the gateway's catch-up starts after it when that is past the ack.
        last = self.feed.last_seqs()
        if last:
            payload["results_after"] = last
        return payload

    def connect(self, results_since: str | dict[str, str] | None = None, *,
                wait_timeout: float = 10.0) -> None:
        """Open the socket (websocket transport) with the token; starts collecting events.

        On connect the gateway sends every result after this member's last ``ack-result`` (or since
        it joined the pool); ``results_since`` is passed along for older gateways. A connect refused
        ``unauthorized`` (a token revoked or expired early) refreshes once and tries again.
        """
        self._bearer()
        if self.sio is not None and self.sio.connected:
            return
        self._results_since = results_since
        try:
            self._open(wait_timeout)
        except DropboxError as err:
            if err.code != "unauthorized" or not self.refresh_token or not self._renew(self.token):
                raise
            self._open(wait_timeout)
        self._stop.clear()
        if self._keeper is None or not self._keeper.is_alive():
            self._keeper = threading.Thread(target=self._keep_feed, name="feed-keeper", daemon=True)
            self._keeper.start()

    def _open(self, wait_timeout: float) -> None:
        sio = socketio.Client(reconnection=True, reconnection_attempts=0, reconnection_delay=0.5,
                              reconnection_delay_max=5, logger=False, engineio_logger=False)
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("file-status", self._on_file_status)
        sio.on("pool-result", self._on_pool_result)
        sio.on("token-expired", self._on_token_expired)
        refusal: list[Any] = []

        def on_connect_error(data: Any = None) -> None:
            refusal.append(data)
            # A reconnect refused for its token: the next attempt (python-socketio's loop calls
            # _auth_payload again) refreshes first.
            if refusal_error(data, "").code == "unauthorized":
                self._refused_unauthorized = True

        # The gateway refuses with {"message", "data": {"code", "message", ...}}; python-socketio
        # hands it to the connect_error handler only, not to the exception connect() raises.
        sio.on("connect_error", on_connect_error)
        try:
            sio.connect(self.gateway_url, auth=self._auth_payload, transports=["websocket"],
                        wait_timeout=wait_timeout)
        except socketio.exceptions.ConnectionError as exc:
            sio.shutdown()
            raise refusal_error(refusal[-1] if refusal else None, str(exc)) from exc
        self.sio = sio

    def disconnect(self) -> None:
        self._stop.set()
        self._wake.set()
        sio, self.sio = self.sio, None
        if sio is not None:
            # shutdown also stops a reconnection loop that runs after a lost connection.
            sio.shutdown()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join(timeout=5)
        try:
            self.feed.flush()
        except OSError as exc:  # the state is saved again next time; results then come again
            log.warning("feed state not saved: %s", exc)

    @property
    def connected(self) -> bool:
        return self._connected

    def _on_connect(self) -> None:
        with self._cond:
            self._connected = True
            self._generation += 1
            # Only the first connection uses the caller's results_since; reconnects rely on the
            # gateway's catch-up from the acks (duplicates are dropped by seq).
            self._results_since = None
            self._cond.notify_all()
        self._token_expired = False
        if self.auto_flush and self.spool is not None and self.spool.pools():
            # Not in the event handler's thread: an upload waits for acks this thread delivers.
            threading.Thread(target=self._flush_quietly, name="spool-flush", daemon=True).start()

    def _on_disconnect(self, reason: Any = None, *_: Any) -> None:
        with self._cond:
            self._connected = False
            # python-socketio reconnects after a lost transport, not after the server's own
            # disconnect (a reauth grace that ran out, a revoked token): the keeper reopens then.
            self._server_cut = reason == socketio.Client.reason.SERVER_DISCONNECT
            self._cond.notify_all()

    def _on_token_expired(self, *_: Any) -> None:
        # Not here (the event's thread): the keeper refreshes and sends reauth at once.
        self._token_expired = True
        self._wake.set()

    def _on_file_status(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or "file_id" not in data:
            return
        with self._cond:
            self.statuses[data["file_id"]].append(data)
            self._cond.notify_all()

    def _on_pool_result(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or "result_id" not in data:
            return
        seq = data.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1 and isinstance(data.get("pool_id"), str):
            self.watch_pools.add(data["pool_id"])
            outcome = self.feed.offer(data, self._hand_over)
            if outcome == GAP:
                self._wake.set()
            elif outcome != NEW:
                with self._cond:
                    self.duplicate_results += 1
            return
        with self._cond:  # no seq (an older gateway): deduplicated by result_id
            if data["result_id"] in self._result_ids:
                self.duplicate_results += 1
                return
        self._hand_over(data)

    def _hand_over(self, data: dict[str, Any]) -> None:
        """One result, in seq order, to the application (``wait_result``, ``results_received``)."""
        with self._cond:
            if self.keep_received or "seq" not in data:  # without seq, result_id is the dedupe key
                self._result_ids.add(data["result_id"])
            if self.keep_received:
                self.results_received.append(data)
            self._result_queues[str(data.get("pool_id"))].append(data)
            self._cond.notify_all()

    def result_done(self, result: dict[str, Any]) -> None:
        """(``confirm_results``) The application finished ``result``: saved and acknowledged soon."""
        seq = result.get("seq")
        if isinstance(seq, int):
            self.feed.done(str(result.get("pool_id")), seq)

    def watch(self, pool_id: str) -> None:
        """Poll ``pool_id`` for results now and then even when none comes live (see poll_seconds)."""
        self.watch_pools.add(pool_id)
        self._wake.set()

    # --- the keeper: reauth, gap fills, polls, acks (one thread per connected client) ----------

    def reauth_margin(self) -> float:
        """How long before its expiry the access token is renewed: a third of its lifetime, 1-60 s."""
        ttl = self.token_ttl or 900.0
        return max(1.0, min(60.0, ttl / 3))

    def _keep_feed(self) -> None:
        stalled: dict[str, tuple[int, float]] = {}  # pool -> (last seq, since when) while a gap is open
        polled: dict[str, float] = {}
        acked_at = 0.0
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            if not self._stop.is_set() and not self._connected and self._server_cut:
                try:
                    self._reopen()
                except DropboxError as err:  # the login ended, or the gateway is away: later
                    log.info("reopen after the gateway's disconnect: %s %s", err.code, err.message)
                    self._stop.wait(2.0)
                continue
            if self._stop.is_set() or not self._connected:
                continue
            try:
                if self._token_expired or (self.refresh_token and self.token_expiring(self.reauth_margin())):
                    self._reauth()
                now = time.monotonic()
                gaps = self.feed.gaps()
                for pool_id in list(stalled):
                    if pool_id not in gaps:
                        del stalled[pool_id]
                for pool_id, last in gaps.items():
                    seen = stalled.get(pool_id)
                    if seen is None or seen[0] != last:
                        stalled[pool_id] = (last, now)  # still moving: the catch-up may close it
                    elif now - seen[1] >= self.gap_wait:
                        self.fill(pool_id)
                        stalled.pop(pool_id, None)
                        polled[pool_id] = now
                for pool_id in list(self.watch_pools):
                    # The first poll a while after the pool is first seen: at connect the gateway's
                    # catch-up is sending what this client missed.
                    if now - polled.setdefault(pool_id, now) > self.poll_seconds:
                        polled[pool_id] = now
                        if pool_id not in gaps:
                            self.fill(pool_id)
                if now - acked_at >= 1.0:
                    acked_at = now
                    self.send_acks()
            except DropboxError as err:  # a lost connection, overloaded: a later round tries again
                log.info("feed keeper: %s %s", err.code, err.message)
                self._stop.wait(1.0)
            except Exception:  # noqa: BLE001 - the keeper must outlive any one failure
                log.exception("feed keeper failed a round")

    def _reopen(self) -> None:
        """A new socket after the gateway closed this one (refreshing first when the token is
        stale: that is the usual reason); the catch-up on connect brings what was missed."""
        # The old one stays in self.sio (closed: a call on it is ConnectionLost, which waits for
        # the reconnect) until _open replaces it.
        if self.sio is not None:
            self.sio.shutdown()
        if self.refresh_token and (self._token_expired or self.token_expiring(self.reauth_margin())):
            self._renew(self.token)
        self._open(10.0)
        self._server_cut = False

    def _reauth(self) -> None:
        """A fresh access token (refresh) on the open socket (SPEC reauth)."""
        if self.refresh_token and (self._token_expired or self.token_expiring(self.reauth_margin())):
            with self._refresh_lock:
                if self.token_expiring(self.reauth_margin()) or self._token_expired:
                    try:
                        self._refresh_locked()
                    except DropboxError as err:
                        if err.code == "unauthorized":
                            # The login ended (logout, reuse, disabled user): asking again with
                            # this refresh token cannot succeed; log in again to go on.
                            self.refresh_token = None
                            self._token_expired = False
                        raise
        self.call("reauth", {"token": self.token})
        self._token_expired = False
        self.reauths += 1

    def fill(self, pool_id: str, limit: int = 1000) -> int:
        """Fetch the pool's results after the feed's last seq, every page, into the feed."""
        offered = 0
        after = self.feed.last_seq(pool_id)
        self.gap_fills += 1
        while True:
            page = self.results_page(pool_id, after_seq=after, limit=limit)
            for result in page.get("results") or []:
                if isinstance(result, dict):
                    self._on_pool_result(result)
                    offered += 1
            next_seq = page.get("next_seq")
            if not page.get("more") or not isinstance(next_seq, int) or next_seq <= after:
                return offered
            after = next_seq

    def send_acks(self) -> None:
        """``ack-result`` for every pool whose finished seq moved since its last ack (the feed state
        is saved first: an ack never runs ahead of what this client would remember after a crash)."""
        done = self.feed.flush()
        for pool_id, seq in done.items():
            if seq > self.acked.get(pool_id, 0):
                try:
                    ack = self.call("ack-result", {"pool_id": pool_id, "seq": seq})
                except DropboxError as err:
                    if err.code in ("forbidden", "bad_request"):  # no longer a member; a reset pool
                        self.acked[pool_id] = seq
                        continue
                    raise
                acked = ack.get("acked_seq")
                self.acked[pool_id] = acked if isinstance(acked, int) else seq

    def wait_connected(self, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._connected, timeout):
                raise ConnectionLost("not reconnected within the timeout")

    def call(self, event: str, data: dict[str, Any] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Emit ``event`` and return its ack; an ``{"error"}`` ack raises DropboxError."""
        if self.sio is None:
            raise DropboxError("not_connected", "connect() first")
        try:
            ack = self.sio.call(event, data or {}, timeout=timeout or self.timeout)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError,
                socketio.exceptions.DisconnectedError) as exc:
            raise ConnectionLost(f"{event}: {type(exc).__name__}") from exc
        if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
            raise DropboxError.from_body(ack)
        if not isinstance(ack, dict):
            raise DropboxError("error", f"{event}: unexpected ack {ack!r}")
        return ack

    def _renew_socket(self, err: DropboxError) -> bool:
        """An event refused ``unauthorized``: the access token expired before the keeper renewed
        it (a loaded machine, short tokens). Reauth now; True when the event may be sent again.
        A login that ended (logout, reuse, disabled user) fails the refresh: the refusal stands."""
        if err.code != "unauthorized" or not self.refresh_token or not self._connected:
            return False
        try:
            self._reauth()  # refreshes first when the token is (about to be) expired, as the keeper does
            return True
        except DropboxError:
            pass
        try:  # the gateway's clock says expired before ours does: a fresh token, once
            with self._refresh_lock:
                self._refresh_locked()
            self._reauth()
        except DropboxError:
            return False
        return True

    def _call_patiently(self, event: str, data: dict[str, Any], deadline: float) -> dict[str, Any]:
        """``call`` that waits out ``overloaded`` (retry_after), reconnections and an expired
        access token (reauth, at most 3 times per call) until deadline."""
        renewals = 0
        while True:
            try:
                return self.call(event, data)
            except ConnectionLost:
                if time.monotonic() > deadline:
                    raise
                self.wait_connected(max(0.1, deadline - time.monotonic()))
            except DropboxError as err:
                if err.code == "unauthorized" and renewals < 3 and time.monotonic() < deadline \
                        and self._renew_socket(err):
                    renewals += 1
                    continue
                if err.code != "overloaded" or time.monotonic() > deadline:
                    raise
                time.sleep(min(err.retry_after or 1.0, max(0.0, deadline - time.monotonic())))

    # --- uploads -----------------------------------------------------------------------

    def upload(self, source: str | os.PathLike | BinaryIO, *, file_name: str | None = None,
               pool_id: str | None = None, timestamp: str | None = None, items: list[dict] | None = None,
               metadata: dict | None = None, content_type: str | None = None, sha256: bool = True,
               on_progress: Callable[[int, int], None] | None = None,
               deadline_seconds: float = 3600.0) -> str:
        """Upload a file (path or seekable binary file object); returns its ``file_id`` once
        ``complete-upload`` answered ``cached``."""
        owned = isinstance(source, str | os.PathLike)
        fileobj: BinaryIO = open(source, "rb") if owned else source  # noqa: SIM115 - closed below
        try:
            if file_name is None:
                file_name = Path(source).name if owned else Path(getattr(source, "name", "upload.bin")).name
            fileobj.seek(0, io.SEEK_END)
            size = fileobj.tell()
            fileobj.seek(0)
            payload: dict[str, Any] = {"file_name": file_name, "size": size}
            if sha256:
                payload["sha256"] = sha256_of(fileobj)
            for key, value in (("pool_id", pool_id), ("timestamp", timestamp), ("items", items),
                               ("metadata", metadata), ("content_type", content_type)):
                if value is not None:
                    payload[key] = value
            deadline = time.monotonic() + deadline_seconds
            ack = self._call_patiently("start-transfer", payload, deadline)
            file_id, chunk_size = ack["file_id"], int(ack["chunk_size"])
            pending = list(range(-(-size // chunk_size))) if size else []
            resumes = 0
            while True:
                try:
                    self._send_chunks(fileobj, file_id, chunk_size, size, pending, on_progress, deadline)
                    self._call_patiently("complete-upload", {"file_id": file_id}, deadline)
                    return file_id
                except DropboxError as err:
                    # conflict on write-chunk: this connection lost the upload's writer lock
                    # (it expired during a long stall); start-transfer with the file_id takes
                    # it again and says which chunks are still missing.
                    # unauthorized on write-chunk: the token expired mid-upload; after a
                    # reauth the upload resumes where it stopped.
                    if not isinstance(err, ConnectionLost) and err.code != "conflict" \
                            and not self._renew_socket(err):
                        raise
                    resumes += 1
                    if resumes > self.max_resumes or time.monotonic() > deadline:
                        raise
                    pending = self._resume(payload, file_id, deadline)
        finally:
            if owned:
                fileobj.close()

    def _resume(self, payload: dict[str, Any], file_id: str, deadline: float) -> list[int]:
        """After a dropped connection: wait for the reconnect, ask which chunks are missing."""
        while True:
            self.wait_connected(max(0.1, deadline - time.monotonic()))
            try:
                ack = self._call_patiently("start-transfer", {**payload, "file_id": file_id}, deadline)
                return sorted(int(i) for i in ack.get("missing", []))
            except DropboxError as err:
                # conflict: the gateway has not yet noticed the old socket is gone, and it still
                # holds the writer lock; it is released on its disconnect (or expires).
                if err.code not in ("conflict", "connection_lost") or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _send_chunks(self, fileobj: BinaryIO, file_id: str, chunk_size: int, size: int, indexes: list[int],
                     on_progress: Callable[[int, int], None] | None, deadline: float) -> None:
        """Send ``indexes`` with up to ``window`` chunks awaiting their ack."""
        todo = collections.deque(indexes)
        state = {"in_flight": 0, "sent": (-(-size // chunk_size) - len(indexes)) * chunk_size}
        retry: list[tuple[int, float]] = []  # (index, not before) after `overloaded`
        failure: list[DropboxError] = []
        with self._cond:
            generation = self._generation
        ack_timeout = self.timeout

        def on_ack(index: int, length: int, ack: Any) -> None:
            with self._cond:
                state["in_flight"] -= 1
                if isinstance(ack, dict) and isinstance(ack.get("error"), dict):
                    err = DropboxError.from_body(ack)
                    if err.code == "overloaded":
                        retry.append((index, time.monotonic() + (err.retry_after or 1.0)))
                    else:
                        failure.append(err)
                else:
                    state["sent"] += length
                    if on_progress is not None:
                        on_progress(min(state["sent"], size), size)
                self._cond.notify_all()

        def lost() -> bool:
            return not self._connected or self._generation != generation

        while todo or retry or state["in_flight"]:
            with self._cond:
                if failure:
                    raise failure[0]
                now = time.monotonic()
                due = [r for r in retry if r[1] <= now]
                for item in due:
                    retry.remove(item)
                    todo.appendleft(item[0])
                ok = self._cond.wait_for(
                    lambda: failure or lost() or (todo and state["in_flight"] < self.window)
                    or (not todo and not retry and not state["in_flight"]),
                    timeout=min(ack_timeout, 0.2 if retry else ack_timeout))
                if failure:
                    raise failure[0]
                if lost():
                    raise ConnectionLost()
                if not ok and not retry:
                    # No ack for a whole timeout: treat the socket as dead and resume.
                    raise ConnectionLost("no acknowledgement within the timeout")
                if time.monotonic() > deadline:
                    raise DropboxError("timeout", "the upload did not finish before its deadline")
                if not todo or state["in_flight"] >= self.window:
                    continue
                index = todo.popleft()
                state["in_flight"] += 1
            offset = index * chunk_size
            fileobj.seek(offset)
            data = fileobj.read(min(chunk_size, size - offset))
            message = {"file_id": file_id, "index": index, "data": data,
                       "sha256": hashlib.sha256(data).hexdigest()}
            try:
                self.sio.emit("write-chunk", message,
                              callback=lambda ack, i=index, n=len(data): on_ack(i, n, ack))
            except (socketio.exceptions.BadNamespaceError, socketio.exceptions.DisconnectedError) as exc:
                raise ConnectionLost() from exc

    # --- offline updates -----------------------------------------------------------------

    def submit_update(self, source: str | os.PathLike | bytes | BinaryIO, pool_id: str, *,
                      timestamp: str | None = None, name: str | None = None) -> str | None:
        """Send one update to a pool now, or — while offline — keep it in the spool.

        Returns the upload's file_id, or None when it was spooled (it goes with the next
        batch, on reconnect or ``flush_spool``). Its timestamp is the moment it was produced.
        """
        stamp = timestamp or _now_iso()
        if self._connected:
            try:
                payload = io.BytesIO(source) if isinstance(source, bytes) else source
                return self.upload(payload, pool_id=pool_id, timestamp=stamp,
                                   file_name=name or (Path(source).name if isinstance(source, str | os.PathLike)
                                                      else "update.bin"))
            except ConnectionLost:
                if self.spool is None:
                    raise
        if self.spool is None:
            raise DropboxError("offline", "not connected and no spool_dir to keep the update in")
        self.spool.add(pool_id, source, timestamp=stamp, name=name)
        return None

    def flush_spool(self, *, max_bytes: int = 48 * 1024 * 1024, max_items: int = 1000) -> list[str]:
        """Send every spooled update, one batch upload (``items``) per pool; returns the file_ids.

        An update leaves the spool only once its batch is ``cached`` by the fleet.
        ``max_items`` stays within the fleet's MAX_ITEMS (default 1,000; more is refused).
        """
        if self.spool is None:
            return []
        sent = []
        with self._flush_lock:  # a reconnect during a flush must not send the same updates twice
            for pool_id in self.spool.pools():
                for group in batches(self.spool.pending(pool_id), max_bytes, max_items):
                    with tempfile.TemporaryFile() as batch:
                        items = self.spool.build_batch(group, batch)
                        batch.seek(0)
                        if len(items) == 1:
                            file_id = self.upload(batch, file_name=items[0]["name"], pool_id=pool_id,
                                                  timestamp=items[0]["timestamp"])
                        else:
                            file_id = self.upload(batch, file_name=f"batch-{len(items)}-updates.bin",
                                                  pool_id=pool_id, items=items)
                    self.spool.drop(group)
                    sent.append(file_id)
        return sent

    def _flush_quietly(self, attempts: int = 5) -> None:
        """Flush after a (re)connect; the connect handler runs before ``connect()`` has
        returned, so wait for the connection, and retry a few times: whatever is still
        not sent stays in the spool for the next reconnect."""
        for attempt in range(attempts):
            try:
                self.wait_connected(10)
                self.flush_spool()
                return
            except (DropboxError, TimeoutError) as exc:
                log.warning("spooled updates not sent yet (attempt %d): %s", attempt + 1, exc)
                time.sleep(min(2 ** attempt, 10))

    # --- statuses and results -----------------------------------------------------------

    def wait_status(self, file_id: str, status: str = "uploaded_successfully", timeout: float = 60.0,
                    *, check_history: bool = True) -> dict[str, Any]:
        """Wait for ``file-status`` ``status`` (or a later one) of ``file_id``.

        Raises UploadFailed on ``upload_failed`` unless that is what is awaited, and
        TimeoutError when nothing came. Statuses that arrived before the call count.
        """
        target = STATUS_ORDER[status]

        def reached() -> dict[str, Any] | None:
            for event in self.statuses.get(file_id, []):
                if event.get("status") == "upload_failed" and status != "upload_failed":
                    raise UploadFailed("upload_failed", str(event.get("reason") or ""), file_id=file_id)
                if event.get("status") == status or (
                        status != "upload_failed" and event.get("status") != "upload_failed"
                        and STATUS_ORDER.get(event.get("status"), -1) > target):
                    return event
            return None

        with self._cond:
            found = self._cond.wait_for(reached, timeout)
        if found:
            return found
        if check_history and self.sio is not None:
            # The event may have been sent while this socket was reconnecting: ask the index.
            for record in self.history():
                if record.get("file_id") == file_id and record.get("status") == status:
                    return {"file_id": file_id, "status": status}
        raise TimeoutError(f"{file_id} did not reach {status} within {timeout}s")

    def wait_result(self, pool_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next pool-result of ``pool_id`` not yet returned by this method."""
        queue = self._result_queues[str(pool_id)]
        with self._cond:
            if not self._cond.wait_for(lambda: len(queue) > 0, timeout):
                raise TimeoutError(f"no result for pool {pool_id} within {timeout}s")
            return queue.popleft()

    def history(self) -> list[dict[str, Any]]:
        return self.call("get-history", {})["files"]

    def results_page(self, pool_id: str, *, since: str | None = None, after_seq: int | None = None,
                     limit: int | None = None) -> dict[str, Any]:
        """SPEC's get-results: one page ``{results, next_seq, more}``."""
        payload: dict[str, Any] = {"pool_id": pool_id}
        if since:
            payload["since"] = since
        if after_seq is not None:
            payload["after_seq"] = after_seq
        if limit is not None:
            payload["limit"] = limit
        return self.call("get-results", payload)

    def results(self, pool_id: str, since: str | None = None, after_seq: int = 0) -> list[dict[str, Any]]:
        """Every result of the pool (after ``after_seq``, created after ``since``), all pages."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.results_page(pool_id, since=since, after_seq=after_seq, limit=1000)
            found.extend(page.get("results") or [])
            next_seq = page.get("next_seq")
            if not page.get("more") or not isinstance(next_seq, int) or next_seq <= after_seq:
                return found
            after_seq = next_seq

    def alive(self) -> dict[str, Any]:
        return self.call("alive", {})

    # --- downloads ----------------------------------------------------------------------

    def download(self, file_id_or_url: str, dest: str | os.PathLike | IO[bytes], *,
                 range: tuple[int, int | None] | str | None = None) -> dict[str, Any]:  # noqa: A002 - SPEC word
        """Stream a stored file (or a result's ``download_url``) to ``dest``; never whole in memory.

        ``range``: ``(start, end_inclusive_or_None)`` or a raw ``bytes=...`` header value.
        Returns ``{status, bytes, sha256, etag, file_name}`` (sha256 of what was written).
        """
        if file_id_or_url.startswith(("http://", "https://")):
            url = file_id_or_url
        else:
            url = f"{self.fsm_url}/file/{file_id_or_url}"
        headers: dict[str, str] = {}
        if range is not None:
            if isinstance(range, str):
                headers["Range"] = range if range.startswith("bytes=") else f"bytes={range}"
            else:
                start, end = range
                headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        # A 401 (expired access token) refreshes once and retries, before a byte is written.
        with self._authed("GET", url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise DropboxError.from_body(body, response.status_code)
            digest = hashlib.sha256()
            written = 0
            owned = isinstance(dest, str | os.PathLike)
            out: IO[bytes] = open(dest, "wb") if owned else dest  # noqa: SIM115 - closed below
            try:
                for block in response.iter_content(READ_BLOCK):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
            finally:
                if owned:
                    out.close()
            disposition = response.headers.get("Content-Disposition", "")
            name = None
            if "filename=" in disposition:
                name = disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"')
            return {"status": response.status_code, "bytes": written, "sha256": digest.hexdigest(),
                    "etag": (response.headers.get("ETag") or "").strip('"') or None, "file_name": name}
