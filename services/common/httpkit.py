"""HTTP plumbing every Flask service shares.

- the handlers that turn every error (``errors.ApiError``, auth being down,
  Flask's 404/405/413 and unexpected exceptions) into SPEC's ``{"error": {"code", "message"}}``.
- ``/health`` (the process answers), ``/ready`` (every dependency answers) and
  ``/metrics`` (Prometheus text) from one call.
- A request id on every request, bound into the log context and echoed back.
- Body bounds: ``json_body`` and ``body_limit`` refuse a body larger than the route's
  bound from its ``Content-Length``, before reading a byte of it (SPEC's JSON 413).
- ``serve``: the production WSGI server (waitress) for the threaded services, with a
  per-service body bound checked when the headers arrive and its own errors (400, 413,
  431, 500) answered in SPEC's JSON shape instead of waitress's plain text.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from . import logs
from .authclient import AuthUnavailable
from .errors import (
    ApiError,
    bad_request,
    code_for,
    conflict,
    forbidden,
    not_found,
    too_large,
    unauthorized,
    unavailable,
)

__all__ = ["ApiError", "bad_request", "conflict", "forbidden", "not_found", "unauthorized"]

log = logging.getLogger(__name__)


def error_response(err: ApiError) -> Response:
    response = jsonify(err.body())
    response.status_code = err.status
    if err.status == 429 and "retry_after" in err.extra:
        response.headers["Retry-After"] = str(int(err.extra["retry_after"]))
    return response


# The largest body a JSON route reads (a request of the fleet's JSON API is a few hundred bytes;
# metadata, the largest field, is bounded at 16 KiB by validation). Larger: 413 unread.
JSON_BODY_LIMIT = 64 * 1024
# A start-upload body also lists up to MAX_ITEMS batch items: this much more per item (a
# timestamp, two integers and a name of at most 255 UTF-8 bytes, \u-escaped by most encoders).
JSON_ITEM_BYTES = 1024
# What a waitress server buffers of one request body unless its service says otherwise: JSON
# services need far less; services taking files (uploader, results) pass their own bound.
DEFAULT_MAX_BODY = 1024 * 1024

View = TypeVar("View", bound=Callable[..., Any])


def limit_body(max_bytes: int) -> None:
    """Refuse this request's body if it is larger than ``max_bytes``, before reading it.

    ``Content-Length`` is checked now (413, nothing read). A body without one (chunked
    through a server that does not de-chunk) is cut at the bound while it is read:
    Werkzeug raises 413 past ``max_content_length``, answered in SPEC's shape.
    """
    length = request.content_length
    if length is not None and length > max_bytes:
        raise too_large(f"the request body is larger than {max_bytes} bytes")
    request.max_content_length = max_bytes


def body_limit(max_bytes: int) -> Callable[[View], View]:
    """Decorator: the route reads at most ``max_bytes`` of body (``limit_body`` first)."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            limit_body(max_bytes)
            return view(*args, **kwargs)

        return bounded  # type: ignore[return-value]

    return wrap


def json_body(max_bytes: int = JSON_BODY_LIMIT) -> dict[str, Any]:
    """The request's JSON object (at most ``max_bytes``, else 413 unread), or a 400 in SPEC's shape."""
    limit_body(max_bytes)
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # "[[[[..." nested deeper than the parser recurses: bad input, not a 500
        data = None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_internal_key(expected: str, previous: str = "") -> None:
    """Refuse a call to an internal route without the shared ``X-Internal-Key``.

    ``previous`` (INTERNAL_API_KEY_PREVIOUS) is accepted too while a key is rotated: callers
    already restarted send the new key, those not yet restarted the old one, and both are
    served (callers only ever send their current key). Both are compared in constant time,
    every time, so the answer's timing does not say which one nearly matched."""
    given = request.headers.get("X-Internal-Key", "").encode()
    current_ok = hmac.compare_digest(given, expected.encode())
    previous_ok = hmac.compare_digest(given, previous.encode()) if previous else False
    if not given or not (current_ok or previous_ok):
        raise unauthorized("this route needs X-Internal-Key")


class ServiceMetrics:
    """A registry per app, so tests can build several apps in one process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("http_request_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, list(labels), registry=self.registry)

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS) -> Histogram:
        return Histogram(name, doc, list(labels), registry=self.registry, buckets=buckets)

    def render(self) -> bytes:
        return generate_latest(self.registry)


ReadyCheck = Callable[[], bool]
# What a user is told of an unexpected failure; the cause is in the log under the request id.
GENERIC_5XX = "the service failed to answer; try again"


def install(app: Flask, service: str, checks: Mapping[str, ReadyCheck],
            metrics: ServiceMetrics | None = None, cors_origins: str | Sequence[str] = (),
            expose_headers: Sequence[str] = (),
            reports: Callable[[], Mapping[str, bool]] | None = None) -> ServiceMetrics:
    """Error handlers, request ids, access metrics, CORS, /health, /ready and /metrics.

    /ready is 200 when every one of ``checks`` passes. ``reports`` (answered at once, from what
    the service already knows) adds checks that are shown but do not decide readiness: they are
    merged into ``checks`` and the failing ones are listed under ``degraded`` (a dependency only
    some requests need, such as one pool's storage backend).

    CORS: the dashboard (served by the gateway) calls auth, file_service_manager
    and pool_aggregator from the browser. Only ``cors_origins`` (``CommonSettings.cors_origins``,
    a sequence or a comma-separated string) get CORS headers; none means same origin only.
    Credentials travel in the Authorization header, never in cookies, so no cookie is exposed to others.
    ``expose_headers``: a service's own response headers a browser client must read (tus's offsets).
    """
    origins = [o.strip() for o in cors_origins.split(",")] if isinstance(cors_origins, str) else list(cors_origins)
    origins = [o for o in origins if o]
    if origins:
        from flask_cors import CORS

        CORS(app, origins=origins, supports_credentials=False,
             expose_headers=["Content-Disposition", "ETag", "Content-Range", "Retry-After", "X-Request-Id",
                             *expose_headers])
    metrics = metrics or ServiceMetrics(service)
    app.extensions["metrics"] = metrics

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.log_token = logs.bind(request_id=g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("request_started", time.perf_counter())
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def _unbind(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            logs.reset(token)

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err)

    @app.errorhandler(AuthUnavailable)
    def _auth_down(_err: AuthUnavailable) -> Response:
        # auth did not answer: a transient 503 the client retries, never a guess at the identity.
        return error_response(unavailable("auth is unavailable; try again"))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status >= 500:
            # A 5xx description may quote internals (hosts, queries): logged, never answered.
            log.error("server error", extra={"status": status, "error": err.description})
            return error_response(ApiError(status, code_for(status), GENERIC_5XX))
        return error_response(ApiError(status, code_for(status), err.description or err.name))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        # Details (the exception and its traceback) go to the log under this request id only.
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", GENERIC_5XX))

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok", "service": service})

    @app.get("/ready")
    def ready() -> Response:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:  # noqa: BLE001 - a failing check means not ready
                results[name] = False
        ok = all(results.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not_ready", "service": service, "checks": results}
        if reports is not None:
            try:
                shown = {name: bool(value) for name, value in reports().items() if name not in results}
            except Exception:  # noqa: BLE001 - a report that fails shows as such, never fails /ready
                log.exception("ready reports failed")
                shown = {"reports": False}
            results.update(shown)
            body["degraded"] = sorted(name for name, value in shown.items() if not value)
        response = jsonify(body)
        response.status_code = 200 if ok else 503
        return response

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype=CONTENT_TYPE_LATEST)

    return metrics


def read_exactly(stream: Any, n: int) -> bytes:
    """Up to ``n`` bytes of a request body; fewer only at its end (a WSGI read may return short)."""
    parts: list[bytes] = []
    remaining = n
    while remaining > 0:
        piece = stream.read(remaining)
        if not piece:
            break
        parts.append(piece)
        remaining -= len(piece)
    return b"".join(parts)


def _json_error_body(status: int, reason: str, detail: str) -> bytes:
    code = "too_large" if status in (413, 431) else code_for(status)
    message = f"{reason}: {detail}" if status < 500 else GENERIC_5XX
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of a waitress server, and for how long.

    waitress reads requests and writes responses on one async loop and runs the app
    in ``threads`` worker threads; a worker is busy only between a request being
    complete and its response being handed to the loop's output buffers. So:

    - A slow or silent *sender* costs a connection slot, never a worker: the whole
      request is read by the loop first. The headers must arrive within
      ``header_timeout`` of the connection (or of the previous response) -- a real
      client sends a few hundred bytes at once; slowloris trickles. A body must keep
      moving: ``channel_timeout`` seconds without a byte closes the connection
      (waitress's only inactivity timer; it also closes idle keep-alive connections).
    - Connection slots: ``connection_limit`` at once; past it waitress stops
      accepting until one closes. 100 (waitress's default) is what 100 idle sockets
      from one client exhausted; idle ones are closed after ``header_timeout``, and
      per-IP limits belong at the ingress (every connection here comes from it).
    - A slow *reader* of a download or an archive: the worker writes the response into
      the connection's output buffer (in memory up to ``outbuf_overflow``, then a
      temporary file) and returns to the pool once all of it is buffered; past
      ``outbuf_high_watermark`` buffered bytes it waits for the client to drain.
      waitress waits forever; here it waits ``write_stall`` seconds at most for the
      buffer to drop below the mark, then drops the client (so a reader must take one
      download piece, 256 KiB, per 30 s -- ~9 KB/s -- or lose the connection). A worker
      is pinned at most ``write_stall`` per piece by a reader that stops.
    - Memory: at most ``inbuf_overflow`` of a body and ``outbuf_overflow`` of a response
      per connection stay in memory (the rest spills to temporary files, at most the
      body bound and the watermark): 400 x 320 KiB = 125 MiB in the worst case, within
      the smallest pod's 512 MiB.
    - Reads: while the rest of a Content-Length body is read, the loop takes up to
      ``recv_bytes`` (and never past the body's end) per read; waitress's 8 KiB made a
      1 MiB tus PATCH 128 passes of the loop (recv, parse, spill) on the one thread that
      serves every connection -- a third of file_uploader's CPU in a 50 MB upload
      (py-spy). Headers, chunked bodies and whatever follows a body are read 8 KiB at a
      time, as waitress does (its chunked parser is quadratic in the read's size, and a
      large read of tiny pipelined requests would queue thousands of them at once). One
      read's buffer is transient: one loop thread, one read at a time.
    """

    header_timeout: float = 10.0
    channel_timeout: int = 30
    write_stall: float = 30.0
    connection_limit: int = 400
    inbuf_overflow: int = 64 * 1024
    outbuf_overflow: int = 256 * 1024
    outbuf_high_watermark: int = 4 * 1024 * 1024
    # How often the loop looks for connections past their timeouts (the timeouts' granularity).
    cleanup_interval: int = 5
    recv_bytes: int = 256 * 1024


SMALL_READ = 8192  # waitress's own recv_bytes: headers, chunked bodies, pipelined requests


def _waitress_classes(limits: ServerLimits) -> type[Any]:
    """waitress's server with its error answers in SPEC's JSON shape and ``limits`` applied
    (waitress is imported when serving only).

    waitress answers some requests itself, before the app sees them: a body over
    ``max_request_body_size`` (413, from Content-Length when the headers arrive, or
    while a chunked body is read), headers over ``max_request_header_size`` (431), a
    malformed request (400) and an app that failed before its first byte (500). Its
    ``ErrorTask`` writes plain text; the channel class names the task class it uses
    (``error_task_class``), so one subclass of each is the whole override.
    """
    from waitress.channel import ClientDisconnected, HTTPChannel
    from waitress.server import TcpWSGIServer
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error: Any = getattr(self.request, "error", None)
            body = _json_error_body(int(error.code), str(error.reason), str(error.body))
            self.status = f"{error.code} {error.reason}"
            self.response_headers = [*self.response_headers, ("Content-Type", "application/json")]
            self.set_close_on_finish()  # the rest of a refused body is never read
            self.content_length = len(body)
            self.write(body)

    class BoundedChannel(HTTPChannel):
        error_task_class = JsonErrorTask

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # When the request now being read began (its headers are due within header_timeout);
            # 0 once it is complete. A new connection's first request counts from the accept.
            self.request_began = time.time()

        def received(self, data: bytes) -> bool:
            before = self.request
            result: bool = super().received(data)
            if self.request is None:
                self.request_began = 0.0
            elif self.request is not before:
                self.request_began = time.time()
            return result

        def recv(self, buffer_size: int) -> bytes:
            # Large reads only for the rest of a Content-Length body, never past its end: waitress's
            # chunked-body parser copies the rest of its buffer after every chunk (quadratic in the
            # read: one 256 KiB read of 1-byte chunks held the loop thread 0.6 s, 5 s over a body),
            # and one large read of tiny pipelined requests would parse thousands at once.
            # Headers, chunked bodies and pipelining get waitress's 8 KiB.
            request = self.request
            remain = getattr(getattr(request, "body_rcv", None), "remain", None)
            if request is not None and request.headers_finished and not request.chunked and isinstance(remain, int):
                size = max(SMALL_READ, min(buffer_size, remain))
            else:
                size = SMALL_READ
            data: bytes = super().recv(size)
            return data

        def headers_overdue(self, now: float) -> bool:
            reading = self.request is None or not self.request.headers_finished
            return bool(self.request_began) and not self.requests and reading \
                and now - self.request_began > limits.header_timeout

        def _flush_outbufs_below_high_watermark(self) -> None:
            # waitress 3.0.2's loop, with the wait bounded: the worker waits at most write_stall
            # seconds for a slow reader to drain the buffer below the watermark, then drops it.
            if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
                return
            deadline = time.monotonic() + limits.write_stall
            channel: Any = self  # the stubs do not know waitress's private flush helpers
            with self.outbuf_lock:
                (_, exception) = channel._flush_exception(channel._flush_some, do_close=False)
                if exception:
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(limits.write_stall)
                    return
                while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        log.warning("slow reader dropped", extra={"buffered": self.total_outbufs_len})
                        self.will_close = True
                        self.server.pull_trigger()
                        raise ClientDisconnected
                    self.server.pull_trigger()
                    self.outbuf_lock.wait(left)

    class BoundedServer(TcpWSGIServer):
        channel_class = BoundedChannel

        def maintenance(self, now: int) -> None:  # waitress passes time.time() (a float)
            super().maintenance(now)  # idle past channel_timeout: closed
            channels: Any = self.active_channels  # {fileno: channel}; the stubs say otherwise
            for channel in list(channels.values()):
                if isinstance(channel, BoundedChannel) and channel.headers_overdue(now):
                    channel.will_close = True

    return BoundedServer


def make_server(app: Any, host: str, port: int, *, threads: int = 16, max_body: int = DEFAULT_MAX_BODY,
                limits: ServerLimits | None = None) -> Any:
    """A waitress server bound to ``host:port`` (0 = a free port: see ``.effective_port``), not yet run.

    ``max_body``: the largest body a request may carry (inclusive). waitress refuses a
    larger ``Content-Length`` when the headers arrive, before reading the body, and cuts
    a chunked body once it grows past it; either way the answer is SPEC's JSON 413.
    ``limits``: timeouts, connection and buffer bounds (``ServerLimits``).
    """
    limits = limits or ServerLimits()
    server_class = _waitress_classes(limits)
    # waitress refuses content_length >= max_request_body_size; +1 makes max_body itself allowed.
    return server_class(app, host=host, port=port, threads=threads, max_request_body_size=max_body + 1,
                        channel_timeout=limits.channel_timeout, cleanup_interval=limits.cleanup_interval,
                        connection_limit=limits.connection_limit, inbuf_overflow=limits.inbuf_overflow,
                        outbuf_overflow=limits.outbuf_overflow, outbuf_high_watermark=limits.outbuf_high_watermark,
                        recv_bytes=limits.recv_bytes, ident=None, clear_untrusted_proxy_headers=True)


def serve(app: Any, host: str, port: int, *, threads: int = 16, max_body: int = DEFAULT_MAX_BODY) -> None:
    """Run a WSGI app under waitress until the process is signalled."""
    server = make_server(app, host, port, threads=threads, max_body=max_body)
    log.info("listening", extra={"host": host, "port": server.effective_port, "max_body": max_body})
    server.run()
