"""Everything the gateway's socket use cases, routes and handlers use, wired once by create_app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from services.common.audit import AuditTrail
from services.common.httpkit import ServiceMetrics
from services.common.ports import AuthLookup

from . import wsfast
from .config import Settings
from .local import LocalSockets
from .ports import Deliveries, FileHistory, PoolResults, Revocations, Sockets, Uploader


class GatewayMetrics:
    def __init__(self, metrics: ServiceMetrics, max_connections: int) -> None:
        registry = metrics.registry
        self.connected = Gauge("gateway_connected_sockets", "Sockets connected to this process",
                               registry=registry)
        self.max_connections = Gauge("gateway_max_connections", "GATEWAY_MAX_CONNECTIONS of this process",
                                     registry=registry)
        self.max_connections.set(max_connections)
        self.ws_fast_unmask = Gauge("gateway_ws_fast_unmask",
                                    "1 when eventlet unmasks WebSocket frames with the fast path",
                                    registry=registry)
        self.ws_fast_unmask.set_function(lambda: 1.0 if wsfast.is_active() else 0.0)
        self.ws_assembly = Gauge("gateway_ws_assembly_bytes",
                                 "Bytes of partial WebSocket messages held (GATEWAY_ASSEMBLY_BUDGET_BYTES bounds it)",
                                 registry=registry)
        self.ws_assembly.set_function(lambda: float(wsfast.BUDGET.used))
        # Bounded by the open sockets (one catch-up per socket at a time; a newer one stops the older).
        self.catchups = Gauge("gateway_catchups", "Catch-ups on connect started and not finished "
                              "(running, or waiting for one of the GATEWAY_MAX_CATCHUPS turns)", registry=registry)
        self.events: Counter = metrics.counter("gateway_events_total", "Socket events handled", ("event", "outcome"))
        self.connects: Counter = metrics.counter("gateway_connects_total", "Connection attempts", ("outcome",))
        self.chunk_bytes: Counter = metrics.counter("gateway_chunk_bytes_total", "Chunk bytes received from sockets")
        self.emits: Counter = metrics.counter("gateway_emits_total", "Events emitted to sockets", ("event",))


@dataclass(frozen=True)
class Deps:
    settings: Settings
    auth: AuthLookup
    uploader: Uploader
    history: FileHistory
    results: PoolResults
    # The use cases' view of python-socketio (sessions, rooms, emits).
    sockets: Sockets
    local: LocalSockets
    metrics: GatewayMetrics
    audit: AuditTrail
    # Is a socket's token revoked / its user disabled (asked on every event; see identity.py).
    revocations: Revocations
    # python-socketio's Server itself: only app.py and events.py touch it (registration,
    # engine.io settings); the use cases go through ``sockets``. None in fast tests.
    server: Any = None
    # Once-only notifications already emitted (handlers.py); None: every message is emitted.
    deliveries: Deliveries | None = None
