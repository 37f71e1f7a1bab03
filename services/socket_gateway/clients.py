"""HTTP clients of the services the gateway forwards to.

The shared ``serviceclient`` clients (one bounded keep-alive pool each, green under
eventlet) with the socket's error policy: every failure comes back as the
``errors.ApiError`` a socket client must see (a 5xx is ``overloaded`` + ``retry_after``).
"""

from __future__ import annotations

from typing import Any

from services.common import serviceclient
from services.common.serviceclient import ErrorPolicy, ServiceClient

from .core import error_from_http


def _socket_policy(service: str) -> ErrorPolicy:
    """A service's answer as the socket client must see it (5xx -> overloaded, retry)."""
    return lambda status, body: error_from_http(status, body, service)


class UploaderClient(serviceclient.UploaderClient):
    def __init__(self, base_url: str, internal_key: str, timeout: float = 30.0, pool_size: int = 64) -> None:
        super().__init__(base_url, internal_key, timeout=timeout, pool_size=pool_size,
                         on_error=_socket_policy(self.service))


class _ServiceClient(ServiceClient):
    def __init__(self, base_url: str, timeout: float = 30.0, pool_size: int = 64) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=pool_size, on_error=_socket_policy(self.service))


class FileManagerClient(_ServiceClient):
    service = "file_service_manager"

    def files(self, token: str) -> dict[str, Any]:
        # file_service_manager's largest page: get-history answers up to 1000 records (newest first).
        return self.call("GET", "/files", params={"limit": "1000"},
                          headers={"Authorization": f"Bearer {token}"})


class AggregatorClient(_ServiceClient):
    service = "pool_aggregator"

    def __init__(self, base_url: str, internal_key: str, timeout: float = 30.0, pool_size: int = 64) -> None:
        super().__init__(base_url, timeout=timeout, pool_size=pool_size)
        self.internal_key = internal_key

    def results(self, pool_id: str, token: str, since: str | None = None, after_seq: int | None = None,
                limit: int | None = None) -> dict[str, Any]:
        params: dict[str, str] = {}
        if since:
            params["since"] = since
        if after_seq is not None:
            params["after_seq"] = str(after_seq)
        if limit is not None:
            params["limit"] = str(limit)
        return self.call("GET", f"/pools/{pool_id}/results", params=params or None,
                         headers={"Authorization": f"Bearer {token}"})

    def ack(self, pool_id: str, user_id: str, seq: int) -> dict[str, Any]:
        return self.call("PUT", f"/internal/pools/{pool_id}/acks/{user_id}", json={"seq": seq},
                         headers={"X-Internal-Key": self.internal_key})

    def acked(self, pool_id: str, user_id: str) -> int | None:
        found = self.call("GET", f"/internal/pools/{pool_id}/acks/{user_id}",
                          headers={"X-Internal-Key": self.internal_key}).get("acked_seq")
        return int(found) if isinstance(found, int) and not isinstance(found, bool) else None
