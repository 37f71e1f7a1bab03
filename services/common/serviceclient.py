"""HTTP clients of the fleet's own services, written once.

``ServiceClient`` is one ``requests.Session`` with a bounded connection pool
(``pool_size`` keep-alive connections; a 1 MiB chunk costs one request on a warm
connection, not a TCP handshake) and a per-call timeout. Under eventlet's
monkey-patching its sockets are green.

What a failure *means* depends on the caller: to a socket client a 5xx of
file_uploader is "overloaded, retry"; to a processor posting a result it is a
502. So the caller passes its policy, ``on_error(status, body) -> ApiError``;
an unreachable service is ``on_error(503, None)``. Every failure is the fleet's
one error type.

``UploaderClient`` is the only client of file_uploader's internal ``/uploads``
routes (the gateway's socket uploads and pool_aggregator's results both use it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .errors import ApiError, code_for

ErrorPolicy = Callable[[int, Any], ApiError]


def passthrough(service: str) -> ErrorPolicy:
    """The default policy: the service's own SPEC error, or one named after its status."""
    def policy(status: int, body: Any) -> ApiError:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            extra = {k: v for k, v in error.items() if k not in ("code", "message")}
            return ApiError(status, error["code"], str(error.get("message") or f"{service} answered {status}"),
                            **extra)
        return ApiError(status, code_for(status), f"{service} answered {status}")
    return policy


class ServiceClient:
    service = "service"

    def __init__(self, base_url: str, *, timeout: float = 30.0, pool_size: int = 64,
                 on_error: ErrorPolicy | None = None, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.on_error = on_error or passthrough(self.service)
        self.session = requests.Session()
        # pool_size bounds the keep-alive connections to this service (one per concurrent call).
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(headers or {})

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object of a 2xx answer; anything else is ``on_error``'s ApiError."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise self.on_error(503, None) from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = None
        if 200 <= response.status_code < 300:
            if not isinstance(body, dict):
                raise self.on_error(503, None)  # a 2xx that is not SPEC's JSON is a broken service
            return body
        raise self.on_error(response.status_code, body)


class UploaderClient(ServiceClient):
    """file_uploader's internal ``/uploads`` routes (X-Internal-Key)."""

    service = "file_uploader"

    def __init__(self, base_url: str, internal_key: str, **kwargs: Any) -> None:
        super().__init__(base_url, headers={"X-Internal-Key": internal_key}, **kwargs)

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/uploads", json=body)

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str,
                  sha256: str | None = None) -> dict[str, Any]:
        headers = {"X-Owner-Id": owner_id, "X-Writer": writer, "Content-Type": "application/octet-stream"}
        if sha256:
            headers["X-Chunk-Sha256"] = sha256
        return self.call("PUT", f"/uploads/{file_id}/chunks/{index}", data=data, headers=headers)

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> dict[str, Any]:
        return self.call("POST", f"/uploads/{file_id}/complete", json={"owner_id": owner_id, "writer": writer})

    def release(self, file_id: str, *, writer: str) -> None:
        self.call("POST", f"/uploads/{file_id}/release", json={"writer": writer})

    def describe(self, file_id: str, *, owner_id: str) -> dict[str, Any]:
        """An upload's state (status, pool_id, received, missing); another owner's is a 404."""
        return self.call("GET", f"/uploads/{file_id}", params={"owner_id": owner_id})

    def cancel(self, file_id: str, *, owner_id: str) -> dict[str, Any]:
        """Drop an unfinished upload's bytes (only its owner's: another owner's is a 404)."""
        return self.call("POST", f"/uploads/{file_id}/cancel", json={"owner_id": owner_id})


class StorageProbeClient(ServiceClient):
    """file_service_manager's internal storage probe (X-Internal-Key): auth checks a pool's storage
    with it before saving it (a write, read and delete of a small object in that backend).

    The storage travels with its secrets in clear over the fleet's internal network only; the answer
    is ``{ok: true}`` or SPEC's 400 ``bad_storage`` with the backend's reason (never a secret)."""

    service = "file_service_manager"

    def __init__(self, base_url: str, internal_key: str, **kwargs: Any) -> None:
        # A probe of an unreachable S3 endpoint takes the backend's own timeouts: 30 s covers them.
        kwargs.setdefault("timeout", 30.0)
        kwargs.setdefault("pool_size", 4)  # admins change pools rarely
        kwargs.setdefault("on_error", self._policy)
        super().__init__(base_url, headers={"X-Internal-Key": internal_key}, **kwargs)

    @staticmethod
    def _policy(status: int, body: Any) -> ApiError:
        """The backend's refusal is the admin's 400 ``bad_storage``; anything else (file_service_manager
        down, a wrong internal key) means the storage could not be checked now: 503, never a 401 to the admin."""
        refused = passthrough("file_service_manager")(status, body)
        if status == 400 and refused.code == "bad_storage":
            return refused
        return ApiError(503, "unavailable", "the storage cannot be checked now (file_service_manager did not "
                                            "answer); try again")

    def probe(self, storage: dict[str, Any]) -> None:
        self.call("POST", "/internal/storage/probe", json={"storage": storage})
