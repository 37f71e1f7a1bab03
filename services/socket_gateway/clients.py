"""HTTP clients of the services the gateway forwards to.

One ``requests.Session`` each: under eventlet's monkey-patching its sockets are green, and
its urllib3 pool keeps connections alive, so a 1 MiB chunk costs one request on a warm
connection rather than a TCP handshake. The pool is sized for many concurrent sockets.
Every failure comes back as ``errors.ApiError`` carrying SPEC's code.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .core import error_from_http, unavailable


def _session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _ServiceClient:
    service = "service"

    def __init__(self, base_url: str, timeout: float = 30.0, pool_size: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = _session(pool_size)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise unavailable(self.service) from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = None
        if 200 <= response.status_code < 300:
            if not isinstance(body, dict):
                raise unavailable(self.service)
            return body
        raise error_from_http(response.status_code, body, self.service)

    def healthy(self) -> bool:
        try:
            return self.session.get(f"{self.base_url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False


class UploaderClient(_ServiceClient):
    """file_uploader's internal ``/uploads`` routes (X-Internal-Key)."""

    service = "file_uploader"

    def __init__(self, base_url: str, internal_key: str, timeout: float = 30.0, pool_size: int = 64) -> None:
        super().__init__(base_url, timeout, pool_size)
        self.session.headers["X-Internal-Key"] = internal_key

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/uploads", json=body)

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str,
                  sha256: str | None = None) -> dict[str, Any]:
        headers = {"X-Owner-Id": owner_id, "X-Writer": writer, "Content-Type": "application/octet-stream"}
        if sha256:
            headers["X-Chunk-Sha256"] = sha256
        return self._call("PUT", f"/uploads/{file_id}/chunks/{index}", data=data, headers=headers)

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> dict[str, Any]:
        return self._call("POST", f"/uploads/{file_id}/complete",
                          json={"owner_id": owner_id, "writer": writer})

    def release(self, file_id: str, *, writer: str) -> None:
        self._call("POST", f"/uploads/{file_id}/release", json={"writer": writer})


class FileManagerClient(_ServiceClient):
    service = "file_service_manager"

    def files(self, token: str) -> dict[str, Any]:
        # file_service_manager's largest page: get-history answers up to 1000 records (newest first).
        return self._call("GET", "/files", params={"limit": "1000"},
                          headers={"Authorization": f"Bearer {token}"})


class AggregatorClient(_ServiceClient):
    service = "pool_aggregator"

    def results(self, pool_id: str, token: str, since: str | None = None) -> dict[str, Any]:
        params = {"since": since} if since else None
        return self._call("GET", f"/pools/{pool_id}/results", params=params,
                          headers={"Authorization": f"Bearer {token}"})
