"""HTTP plumbing every Flask service shares.

- the handlers that turn every error (``errors.ApiError``, auth being down,
  Flask's 404/405/413 and unexpected exceptions) into SPEC's ``{"error": {"code", "message"}}``.
- ``/health`` (the process answers), ``/ready`` (every dependency answers) and
  ``/metrics`` (Prometheus text) from one call.
- A request id on every request, bound into the log context and echoed back.
- ``serve``: the production WSGI server (waitress) for the threaded services.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from . import logs
from .authclient import AuthUnavailable
from .errors import ApiError, bad_request, code_for, conflict, forbidden, not_found, unauthorized, unavailable

__all__ = ["ApiError", "bad_request", "conflict", "forbidden", "not_found", "unauthorized"]

log = logging.getLogger(__name__)


def error_response(err: ApiError) -> Response:
    response = jsonify(err.body())
    response.status_code = err.status
    if err.status == 429 and "retry_after" in err.extra:
        response.headers["Retry-After"] = str(int(err.extra["retry_after"]))
    return response


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 in SPEC's shape."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_internal_key(expected: str) -> None:
    """Refuse a call to an internal route without the shared ``X-Internal-Key``."""
    given = request.headers.get("X-Internal-Key", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
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


def install(app: Flask, service: str, checks: Mapping[str, ReadyCheck],
            metrics: ServiceMetrics | None = None, cors_origins: str = "*") -> ServiceMetrics:
    """Error handlers, request ids, access metrics, CORS, /health, /ready and /metrics.

    CORS: the dashboard (served by the gateway) calls auth, file_service_manager
    and pool_aggregator from the browser. Credentials travel in the
    Authorization header, never in cookies, so no cookie is exposed to others.
    """
    from flask_cors import CORS

    CORS(app, origins=cors_origins, supports_credentials=False,
         expose_headers=["Content-Disposition", "ETag", "Content-Range", "Retry-After", "X-Request-Id"])
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
        return error_response(ApiError(status, code_for(status), err.description or err.name))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", "the service failed to answer; try again"))

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
        response = jsonify({"status": "ready" if ok else "not_ready", "service": service, "checks": results})
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


def serve(app: Any, host: str, port: int, *, threads: int = 16, max_body: int = 64 * 1024 * 1024) -> None:
    """Run a WSGI app under waitress until the process is signalled."""
    from waitress import serve as waitress_serve

    log.info("listening", extra={"host": host, "port": port})
    waitress_serve(app, host=host, port=port, threads=threads, max_request_body_size=max_body,
                   channel_timeout=120, ident=None, clear_untrusted_proxy_headers=True)
