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

    def results(self, pool_id: str, token: str, since: str | None = None) -> dict[str, Any]:
        params = {"since": since} if since else None
        return self.call("GET", f"/pools/{pool_id}/results", params=params,
                          headers={"Authorization": f"Bearer {token}"})
