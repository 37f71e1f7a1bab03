"""HTTP calls to the other services: file_uploader (results in) and file_service_manager (bytes out)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from services.common.httpkit import ApiError

RELAY_CHUNK = 64 * 1024


def _upstream_error(response: requests.Response, what: str) -> ApiError:
    """A 4xx of file_uploader is the caller's fault (too large, forbidden type): pass it on as is."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "upstream_failed", f"{what} answered {response.status_code}"
    if 400 <= response.status_code < 500 and response.status_code not in (401, 404):
        extra = {"retry_after": error.get("retry_after")} if code == "overloaded" else {}
        return ApiError(response.status_code, code, message, **{k: v for k, v in extra.items() if v})
    return ApiError(502, "upstream_failed", f"{what} failed ({response.status_code}): {message}")


class Uploader:
    """file_uploader's internal upload routes, used to store a result like any other file."""

    def __init__(self, base_url: str, internal_key: str, *, timeout: float = 30.0,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-Internal-Key": internal_key}
        self.timeout = timeout
        self.session = session or requests.Session()

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict:
        try:
            response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout,
                                            headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(502, "upstream_failed", f"file_uploader unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise _upstream_error(response, what)
        return response.json()

    def start(self, body: dict[str, Any]) -> dict:
        return self._call("POST", "/uploads", "upload start", json=body)

    def put_chunk(self, file_id: str, index: int, data: bytes, *, owner_id: str, writer: str) -> dict:
        return self._call("PUT", f"/uploads/{file_id}/chunks/{index}", "chunk upload", data=data,
                          headers={"X-Owner-Id": owner_id, "X-Writer": writer,
                                   "Content-Type": "application/octet-stream"})

    def complete(self, file_id: str, *, owner_id: str, writer: str) -> dict:
        return self._call("POST", f"/uploads/{file_id}/complete", "upload complete",
                          json={"owner_id": owner_id, "writer": writer})

    def release(self, file_id: str, *, writer: str) -> None:
        try:
            self._call("POST", f"/uploads/{file_id}/release", "release", json={"writer": writer})
        except ApiError:
            pass  # best effort: the session expires on its own


class FileSource:
    """Streams stored files from file_service_manager with the processor's own key."""

    def __init__(self, base_url: str, *, timeout: float = 30.0,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def chunks(self, file_id: str, api_key: str) -> Iterator[bytes]:
        response = self.session.get(f"{self.base_url}/file/{file_id}", headers={"X-API-Key": api_key},
                                    stream=True, timeout=self.timeout)
        try:
            if response.status_code != 200:
                raise RuntimeError(f"file_service_manager answered {response.status_code} for {file_id}")
            yield from response.iter_content(RELAY_CHUNK)
        finally:
            response.close()
