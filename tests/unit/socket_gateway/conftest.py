"""The gateway's deps built from in-memory stand-ins: no network, no eventlet."""

from __future__ import annotations

import pytest

from services.common.audit import AuditTrail
from services.common.httpkit import ServiceMetrics
from services.common.revocations import RevocationList
from services.common.testing import FakeAuth, FakeRevocationStore, InMemoryBroker
from services.common.testing.socket_gateway import (
    FakeFileHistory,
    FakePoolResults,
    FakeSockets,
    FakeUploader,
)
from services.socket_gateway.config import Settings
from services.socket_gateway.deps import Deps, GatewayMetrics
from services.socket_gateway.local import LocalSockets


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


@pytest.fixture
def deps(broker: InMemoryBroker) -> Deps:
    # Pages of 200 (the default is 1,000): a few hundred results make several pages here.
    settings = Settings.from_env({"MAX_CHUNK_BYTES": "1024", "GATEWAY_PING_INTERVAL": "1",
                                  "GATEWAY_PING_TIMEOUT": "1", "GATEWAY_CATCHUP_PAGE": "200"})
    auth = FakeAuth()
    auth.add_user("tok-alice", "7", "alice", pools={"p1": "contributor", "p2": "listener"}, token_id="jti-a")
    auth.add_user("tok-admin", "1", "admin", role="admin", token_id="jti-admin")
    return Deps(settings=settings, auth=auth, uploader=FakeUploader(), history=FakeFileHistory(),
                results=FakePoolResults(), sockets=FakeSockets(),
                local=LocalSockets(settings.max_inflight_per_socket, settings.max_inflight,
                                   settings.max_inflight_bytes_per_socket, settings.max_inflight_bytes),
                metrics=GatewayMetrics(ServiceMetrics("socket_gateway"), 10),
                audit=AuditTrail(broker, "socket_gateway"),
                revocations=RevocationList(FakeRevocationStore("test"), "test", cache_seconds=0))
