"""HTTP calls to the other services: file_uploader (results in, through the shared
``UploaderClient``) and file_service_manager (bytes out, results' staging status)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from services.common.errors import ApiError
from services.common.serviceclient import ServiceClient, UploaderClient

RELAY_CHUNK = 64 * 1024


def _upstream_error(status: int, body: Any) -> ApiError:
    """A 4xx of file_uploader is the caller's fault (too large, forbidden type): pass it on as is.

    Anything else (unreachable, 5xx, our own key refused, a vanished session) is the
    fleet's failure, answered to the processor as 502 ``upstream_failed``.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code, message = error["code"], str(error.get("message"))
    else:
        error, code, message = {}, "upstream_failed", f"answered {status}"
    if 400 <= status < 500 and status not in (401, 404):
        extra = {"retry_after": error.get("retry_after")} if code == "overloaded" else {}
        return ApiError(status, code, message, **{k: v for k, v in extra.items() if v})
    return ApiError(502, "upstream_failed", f"file_uploader failed ({status}): {message}")


class Uploader(UploaderClient):
    """file_uploader's internal upload routes, used to store a result like any other file."""

    def __init__(self, base_url: str, internal_key: str, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, internal_key, timeout=timeout, on_error=_upstream_error)

    def release(self, file_id: str, *, writer: str) -> None:
        try:
            super().release(file_id, writer=writer)
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


def _staging_error(status: int, body: Any) -> ApiError:
    return ApiError(502, "upstream_failed", f"file_service_manager failed ({status})")


class StagingSource(ServiceClient):
    """file_service_manager's internal staging status route (X-Internal-Key)."""

    service = "file_service_manager"

    def __init__(self, base_url: str, internal_key: str, *, timeout: float = 10.0) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=8, on_error=_staging_error,
                         headers={"X-Internal-Key": internal_key})

    def status(self, result_id: str) -> dict[str, Any]:
        return self.call("GET", f"/internal/staging/{result_id}")
