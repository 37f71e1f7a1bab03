"""Delivering one result to one staging target: a filesystem copy or link, an S3 copy, a signed webhook.

Each ``deliver_*`` returns the location to show (never a secret) or raises ``StagingError``
with a reason safe to store and show (no secret, no credential, no query string). The bytes
stream from the result's backend (``Source``) a piece at a time: never the whole result in
memory (pieces of PIECE bytes; boto3's transfer holds one part of S3_PART bytes).

Webhook addresses: a webhook URL whose host resolves to any address that is not globally
routable (``not ip.is_global``: loopback, private, link-local, shared, documentation, reserved,
unspecified; and multicast) is refused (a pool admin must not make the fleet call its own
internal services), unless ``STAGING_WEBHOOK_ALLOW_PRIVATE`` is set (tests, a receiver on the
same private network). The name is resolved once per attempt, every address checked, and the
connection goes to those very addresses (``_PinnedAdapter``): a DNS answer that changes between
the check and the connect (rebinding: a public address first, 127.0.0.1 next) cannot redirect
the call. The Host header, and for https the TLS SNI and certificate check, still use the URL's
host name. Redirects are never followed, so a receiver cannot bounce the request elsewhere;
proxies and credentials are never taken from the environment. Each attempt has one total
deadline (not only per socket read).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from services.common import poolstorage

from . import staging_rules as rules
from .ports import Download

log = logging.getLogger(__name__)

PIECE = 1024 * 1024  # bytes read from the source per write: one piece in memory at a time
S3_PART = 8 * 1024 * 1024  # boto3 multipart part size (its minimum is 5 MiB); one part buffered at a time
WEBHOOK_RESPONSE_BYTES = 4096  # at most this much of a receiver's answer is read (then closed)
MAX_ADDRESSES = 16  # addresses of a webhook host tried in turn (each connect is bounded by the timeout)


class StagingError(RuntimeError):
    """An attempt failed; ``str()`` is safe to store, show and log (no secrets)."""


@dataclass(frozen=True)
class Source:
    """The result to deliver: its values for templates and payloads, how to open its bytes,
    and its path when it lives on a filesystem backend (for ``link``)."""

    values: Mapping[str, Any]
    open: Callable[[], Download]
    local_path: Path | None = None


@dataclass(frozen=True)
class WebhookPolicy:
    timeout: float = 10.0
    allow_private: bool = False


def _copy(download: Download, out: Any) -> int:
    total = 0
    while True:
        piece = download.read(PIECE)
        if not piece:
            return total
        out.write(piece)
        total += len(piece)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_bytes(path: Path, sha256: str) -> bool:
    """Whether ``path`` (not followed if a symlink) is a regular file whose bytes have this sha256;
    read a piece (PIECE bytes) at a time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        while piece := f.read(PIECE):
            digest.update(piece)
    return bool(sha256) and digest.hexdigest() == sha256


def deliver_filesystem(target: rules.Target, source: Source, roots: tuple[str, ...] = ()) -> str:
    """Copy (or hard-link) to a temporary name beside the final one, make it read-only, then
    hard-link it to the final name (never clobbering an existing file) and drop the temporary.

    The final path is rendered with safe components (``rules.file_path``) and checked again
    after the directories exist, on the resolved path: a symlink planted inside the target
    directory cannot carry the result out of it."""
    template = target.path or ""
    try:
        final = Path(rules.file_path(template, source.values))
    except rules.BadTarget as exc:
        raise StagingError(str(exc)) from None
    base = Path(rules.base_dir(template))
    # FILESYSTEM_ROOTS (auth checked it when the pool was set; checked again here, also on the
    # resolved path so that a symlinked directory cannot lead outside the allowed roots).
    if roots and not (poolstorage.under_roots(str(base), roots)
                      and poolstorage.under_roots(str(base.resolve()), [str(Path(r).resolve()) for r in roots])):
        raise StagingError("the target directory is not under a directory this fleet allows (FILESYSTEM_ROOTS)")
    if not base.is_dir():
        raise StagingError("the target directory does not exist")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        real_base = base.resolve()
        if not final.parent.resolve().is_relative_to(real_base):
            raise StagingError("the staging path leaves its target directory (a symlink?)")
        temp = final.parent / f".staging-{uuid.uuid4().hex}.tmp"
        linked = False
        if target.link and source.local_path is not None:
            try:
                os.link(source.local_path, temp)  # same filesystem: no bytes copied
                linked = True
            except OSError as exc:
                log.info("staging link not possible; copying", extra={"reason": exc.strerror})
        try:
            if not linked:
                download = source.open()
                try:
                    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
                    with os.fdopen(fd, "wb") as out:
                        _copy(download, out)
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    download.close()
            # Read-only, as SPEC says staged files are. A link shares the stored file's inode, so
            # this makes the stored copy read-only too (it is never rewritten: results are immutable).
            os.chmod(temp, 0o444)
            # link + unlink, not replace: an existing file at ``final`` is never clobbered (a
            # pool admin's path must not overwrite someone else's file). link fails if it exists.
            try:
                os.link(temp, final)
            except FileExistsError:
                if not _same_bytes(final, str(source.values.get("sha256", ""))):
                    raise StagingError("filesystem: the target file exists already") from None
                # else: a redelivery of an attempt that had placed it; done
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(final.parent)
    except OSError as exc:
        raise StagingError(f"filesystem: {exc.strerror or type(exc).__name__}") from None
    return str(final)


def deliver_s3(target: rules.Target, source: Source, *, client_factory: Callable[..., Any] | None = None) -> str:
    """A copy of the object at ``<prefix><file_name>`` (or the rendered prefix), streamed in parts."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    key = rules.s3_key(target.prefix, source.values)
    make = client_factory or boto3.client
    try:
        client = make("s3", endpoint_url=target.endpoint_url, region_name=target.region or "us-east-1",
                      aws_access_key_id=target.access_key_id, aws_secret_access_key=target.secret_access_key,
                      config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 1}))
        # One part in memory at a time, no threads: the bound on a delivery's memory.
        transfer = TransferConfig(multipart_threshold=S3_PART, multipart_chunksize=S3_PART, max_concurrency=1,
                                  use_threads=False)
        download = source.open()
        try:
            client.upload_fileobj(download, target.bucket, key, Config=transfer,
                                  ExtraArgs={"Metadata": {"sha256": str(source.values["sha256"])}})
        finally:
            download.close()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "error"))[:80]
        raise StagingError(f"s3: {code}") from None
    except (BotoCoreError, OSError) as exc:
        raise StagingError(f"s3: {type(exc).__name__}") from None
    return f"s3://{target.bucket}/{key}"


Address = tuple[int, Any]  # (socket family, sockaddr) as getaddrinfo answers it


def _not_global(address: str) -> bool:
    """Whether an address is not globally routable (loopback, private, link-local, shared/CGNAT,
    multicast, reserved, documentation, unspecified, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and (not embedded.is_global or embedded.is_multicast):
            return True  # an IPv6 form that reaches an internal IPv4 address
    return not ip.is_global or ip.is_multicast


NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (mapped ``::ffff:a.b.c.d``, compatible
    ``::a.b.c.d``, 6to4 ``2002:AABB:CCDD::``, Teredo's client, NAT64 ``64:ff9b::a.b.c.d``): on a
    network with such a gateway, connecting to it reaches that IPv4 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (not :: or ::1, which is_global already refuses)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _addresses(host: str, port: int, allow_private: bool) -> list[Address]:
    """``host``'s addresses, resolved once: the ones the connection will use, and only those.

    Unless ``allow_private``, one address that is not globally routable is enough to refuse (any
    of them could be the one connected to)."""
    try:
        infos = socket.getaddrinfo(host, port)
    except OSError as exc:
        raise StagingError(f"webhook: the host does not resolve ({exc.strerror or 'error'})") from None
    found: list[Address] = []
    for family, kind, _proto, _name, sockaddr in infos:
        if kind not in (0, socket.SOCK_STREAM) or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if not allow_private and _not_global(str(sockaddr[0])):
            raise StagingError("webhook: the URL resolves to an internal address (refused)")
        if (family, sockaddr) not in found:
            found.append((family, sockaddr))
    if not found:
        raise StagingError("webhook: the host does not resolve (no address)")
    return found[:MAX_ADDRESSES]


def _connect(addresses: list[Address], timeout: Any, options: Any, deadline: float | None = None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts (never a new name lookup).

    ``deadline`` (monotonic): the attempt's; each address gets at most what is left of it, so 16
    addresses that drop SYNs cannot hold one attempt 16 timeouts long."""
    failure: OSError = OSError("no address to connect to")
    for family, sockaddr in addresses:
        limit = timeout if isinstance(timeout, (int, float)) else None  # urllib3's "default": a sentinel
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the attempt's deadline passed while connecting")
            limit = left if limit is None else min(limit, left)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for level, option, value in options or ():
                sock.setsockopt(level, option, value)
            if limit is not None:
                sock.settimeout(limit)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    raise failure


class _Watchdog:
    """Shuts the attempt's sockets at its deadline, so a receiver that trickles its status line
    or headers a byte at a time cannot hold the attempt past ``WebhookPolicy.timeout`` (requests'
    own timeouts are per socket operation, not per request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards expired/_sockets between the caller and the timer
        self.expired = False
        self._sockets: list[socket.socket] = []  # bound: one request per attempt, no retries: 1-2 sockets

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if not self.expired:
                return
        _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on it in another thread
    except OSError:
        pass


def _same_host(a: str, b: str) -> bool:
    return _ascii_host(a) == _ascii_host(b)


def _ascii_host(host: str) -> str:
    """The name as it goes on the wire: requests gives the connection an internationalised name
    in its IDNA (punycode) form, urlsplit keeps it in Unicode."""
    host = host.strip("[]").rstrip(".")
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host.lower()


class _PinnedAdapter(HTTPAdapter):
    """An adapter whose connections go to the checked ``addresses`` of ``host`` (no second name
    lookup: DNS rebinding) and report their socket to a ``_Watchdog`` once connected.

    Only the socket's peer is pinned: the connection keeps ``host`` as its name, so http.client
    sends it in the Host header and urllib3 gives it to TLS as SNI and checks the certificate
    against it. A connection to any other host (none is expected: redirects are not followed)
    is refused."""

    def __init__(self, watchdog: _Watchdog, host: str, addresses: list[Address], deadline: float | None = None) -> None:
        self._watchdog = watchdog
        self._host = host
        self._addresses = addresses
        self._deadline = deadline
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **kwargs)
        watchdog, host, addresses, deadline = self._watchdog, self._host, self._addresses, self._deadline

        def new_conn(conn: urllib3.connection.HTTPConnection) -> socket.socket:
            if not _same_host(conn.host, host):
                raise urllib3.exceptions.NewConnectionError(conn, "not the webhook's checked host")
            try:
                sock = _connect(addresses, conn.timeout, conn.socket_options, deadline)
            except TimeoutError as exc:
                raise urllib3.exceptions.ConnectTimeoutError(conn, f"connect timed out: {exc}") from exc
            except OSError as exc:
                raise urllib3.exceptions.NewConnectionError(conn, f"connect failed: {exc}") from exc
            watchdog.opened(sock)
            return sock

        class Http(urllib3.connection.HTTPConnection):
            def _new_conn(self) -> socket.socket:
                return new_conn(self)

        class Https(urllib3.connection.HTTPSConnection):
            def _new_conn(self) -> socket.socket:
                return new_conn(self)  # TLS is then wrapped on it for self.host (SNI, certificate)

        class HttpPool(urllib3.HTTPConnectionPool):
            ConnectionCls = Http

        class HttpsPool(urllib3.HTTPSConnectionPool):
            ConnectionCls = Https

        self.poolmanager.pool_classes_by_scheme = {"http": HttpPool, "https": HttpsPool}


def deliver_webhook(target: rules.Target, source: Source, policy: WebhookPolicy,
                    session: requests.Session | None = None) -> str:
    """POST SPEC's payload signed in ``X-Dropbox-Signature``; any 2xx is delivered.

    The whole attempt (connect, send, status line, headers and at most WEBHOOK_RESPONSE_BYTES of
    body) has one deadline, ``policy.timeout`` seconds; a session never takes proxies or
    credentials from the environment (``trust_env = False``)."""
    url = target.url or ""
    shown = rules.public_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise StagingError("webhook: the URL's port is not a number") from None
    # Resolved and checked once; the connection goes to these addresses only (no second lookup).
    addresses = _addresses(host, port, policy.allow_private)
    body = rules.webhook_body(source.values)
    headers = {"Content-Type": "application/json", "X-Dropbox-Signature": rules.sign(target.secret or "", body),
               "User-Agent": "file-dropbox-staging"}
    watchdog = _Watchdog()
    own = session is None
    poster = session if session is not None else requests.Session()
    poster.trust_env = False  # no proxy, netrc or CA bundle from the environment
    deadline = time.monotonic() + policy.timeout
    adapter = _PinnedAdapter(watchdog, host, addresses, deadline)
    poster.mount("http://", adapter)
    poster.mount("https://", adapter)
    timer = threading.Timer(policy.timeout, watchdog.expire)
    timer.daemon = True
    timer.start()
    try:
        try:
            response = poster.post(url, data=body, headers=headers, timeout=policy.timeout, allow_redirects=False,
                                   stream=True)
        except requests.RequestException as exc:
            if watchdog.expired:
                raise StagingError(f"webhook: Timeout (no complete answer within {policy.timeout:g} s)") from None
            raise StagingError(f"webhook: {type(exc).__name__}") from None
        if watchdog.expired:  # the head was cut short by the watchdog: its status means nothing
            response.close()
            raise StagingError(f"webhook: Timeout (no complete answer within {policy.timeout:g} s)")
        try:
            left = WEBHOOK_RESPONSE_BYTES
            while left > 0 and time.monotonic() < deadline:
                piece = response.raw.read(min(left, 1024), decode_content=False)
                if not piece:
                    break
                left -= len(piece)
        except Exception:  # noqa: BLE001 - the status is what counts; the body is only drained a little
            pass
        finally:
            response.close()
    finally:
        timer.cancel()
        if own:
            poster.close()
    if not 200 <= response.status_code < 300:
        raise StagingError(f"webhook: the receiver answered {response.status_code}")
    return shown
