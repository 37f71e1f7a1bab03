"""Settings of the gateway, read once from the environment in ``__main__``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import CommonSettings, ConfigError, env_float, env_int, env_str, listen_address
from services.common.settings import cors_origins as allowed_origins

REPO_ROOT = Path(__file__).resolve().parents[2]

# What a chunk frame may carry beyond the chunk itself: the socket.io packet
# header, the event name, file_id, index and sha256 travel as a separate text
# frame, so this is generous.
CHUNK_HEADROOM = 64 * 1024

# engine.io's pings: a dead client is noticed after ping_interval + ping_timeout; both bounded
# so a misconfiguration cannot keep dead sockets (and their buffers) for hours.
MAX_PING_SECONDS = 120.0


def _bounded(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    value = env_float(env, name, default)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be within {low}..{high} seconds")
    return value


# The gateway's worst case, by construction (docs/OPERATIONS.md "Gateway memory"), for N open
# connections (all hostile), with the Kubernetes defaults (configmap.yaml; limit 768 MiB):
#   interpreter, libraries, pools ................................... ~100 MiB (64 MiB measured idle)
#   N connections x ~64 KiB (greenlet, socket, engine.io state; 59 KiB measured)
#   partial WebSocket messages <= GATEWAY_ASSEMBLY_BUDGET_BYTES (+1/8 bytearray slack) = 144 MiB
#   messages complete but not yet admitted <= what the budget held a moment before = 128 MiB
#     (the reading task yields after each message: events.GatewayServer)
#   binary packets waiting for their one attachment: N x 4 KiB (events.MAX_BINARY_HEADER_BYTES)
#   events being handled <= GATEWAY_MAX_INFLIGHT_BYTES + one message = 128 + 8 MiB (chunks, and
#     4 MiB reserved per get-history / get-results answer: sockets.ANSWER_RESERVE_BYTES)
#   offline deliveries on connect: 16 at once (local.LocalSockets) x a 2.5 MiB page = 40 MiB
# N = 2,000 (GATEWAY_MAX_CONNECTIONS in Kubernetes): 100 + 125 + 144 + 128 + 8 + 136 + 40 = 681 MiB
# < 768 MiB; N = 1,000: 100 + 63 + 144 + 128 + 4 + 136 + 40 = 615 MiB.


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    max_connections: int
    # The largest chunk the gateway lets through (file_uploader decides the real chunk_size,
    # which must not exceed this). engine.io's max_http_buffer_size (and so eventlet's
    # max_frame_length) = this + CHUNK_HEADROOM. A WebSocket message (all its frames together)
    # larger than that is refused while it arrives, before it is buffered whole: the
    # connection is closed with 1009 (wsfast.CappedMessage), before any Socket.IO connect.
    max_chunk_bytes: int
    cors_allowed_origins: str
    ping_interval: float
    ping_timeout: float
    frontend_dir: Path
    http_timeout: float
    public_auth_url: str
    public_file_service_manager_url: str
    public_pool_aggregator_url: str
    public_file_uploader_url: str
    # The Socket.IO endpoint the browser connects to; empty = the origin that served the page.
    public_socket_gateway_url: str
    # Events a socket (and the whole process) may have in flight at once. python-socketio runs
    # every event in a task of its own with no limit, so a client firing events without
    # waiting for acks made the gateway hold them all (and an HTTP call each): memory grew with
    # the flood. Beyond these an event is answered `overloaded` at once (resilience issue).
    max_inflight_per_socket: int = 64
    max_inflight: int = 2048
    # The payload bytes (chunks) those events may hold, per socket and per process; past them an
    # event is answered `overloaded` (retry_after) and its bytes dropped at once. Per socket: the
    # client library's window of 4 chunks at the largest chunk; per process: see OPERATIONS.md
    # "Gateway memory" (the sum must fit the pod's memory limit with 1,000 hostile sockets).
    max_inflight_bytes_per_socket: int = 32 * 1024 * 1024
    max_inflight_bytes: int = 128 * 1024 * 1024
    # A text WebSocket message (a Socket.IO packet without its binary attachment: event name
    # and JSON payload) is smaller than a chunk: start-transfer with MAX_ITEMS items fits.
    max_text_message_bytes: int = 1024 * 1024
    # The bytes of partial WebSocket messages all sockets of this process may hold at once;
    # beyond it a socket still sending is closed with 1013 (try again later). See OPERATIONS.md
    # "Gateway memory" for the sizing against the pod's memory limit.
    assembly_budget_bytes: int = 128 * 1024 * 1024
    # How long a connection may take to send its request line (the first one, or the next one on
    # a keep-alive connection): a client that connects and sends nothing is dropped after it.
    header_timeout: float = 10.0
    # Every other socket operation of a connection (reading headers, WebSocket frames, writing
    # to a client that does not read): longer than engine.io's ping_interval + ping_timeout, so
    # a live WebSocket (which pongs every ping_interval) never hits it.
    socket_timeout: float = 60.0
    # SPEC's token-expired: a socket whose token expired or was revoked is refused every event
    # but reauth and disconnected this long after (unless reauth succeeds). Only tests shorten it.
    reauth_grace_seconds: float = 30.0
    # The catch-up on connect (sockets.catch_up): results fetched and sent a page at a time (one
    # page held per socket); at most max_catchups sockets catch up at once per process (the
    # others wait their turn holding nothing); the next page is fetched only once the socket's
    # queue of unsent packets is down to catchup_backlog, waiting at most catchup_drain_seconds
    # for it (a client that does not read ends its catch-up; it fills the gap itself later).
    # Pages of 1,000 (pool_aggregator's largest; was 200): each page costs a round trip, a token
    # check at auth and a query, ~5x fewer of them for 10,000 results (README "Issue 11"); a page
    # is ~0.5 MiB as text, inside the 2.5 MiB per catch-up the memory budget above counts.
    catchup_page: int = 1000
    max_catchups: int = 16
    catchup_backlog: int = 400
    catchup_drain_seconds: float = 30.0

    @property
    def max_http_buffer_size(self) -> int:
        return self.max_chunk_bytes + CHUNK_HEADROOM

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        common = CommonSettings.from_env(env)
        host, port = listen_address(env, "socket_gateway")
        settings = cls(
            common=common,
            host=host,
            port=port,
            max_connections=env_int(env, "GATEWAY_MAX_CONNECTIONS", 10000, minimum=1),
            max_chunk_bytes=env_int(env, "MAX_CHUNK_BYTES", 8 * 1024 * 1024, minimum=1024),
            cors_allowed_origins=",".join(allowed_origins(env, "GATEWAY_CORS_ORIGINS", common.cors_origins)),
            ping_interval=_bounded(env, "GATEWAY_PING_INTERVAL", 25.0, 1.0, MAX_PING_SECONDS),
            ping_timeout=_bounded(env, "GATEWAY_PING_TIMEOUT", 20.0, 1.0, MAX_PING_SECONDS),
            frontend_dir=Path(env_str(env, "FRONTEND_DIR", str(REPO_ROOT / "frontend"))),
            http_timeout=env_float(env, "GATEWAY_HTTP_TIMEOUT", 30.0),
            public_auth_url=env_str(env, "PUBLIC_AUTH_URL", common.auth_url),
            public_file_service_manager_url=env_str(env, "PUBLIC_FILE_SERVICE_MANAGER_URL",
                                                    common.file_service_manager_url),
            public_pool_aggregator_url=env_str(env, "PUBLIC_POOL_AGGREGATOR_URL", common.pool_aggregator_url),
            public_file_uploader_url=env_str(env, "PUBLIC_FILE_UPLOADER_URL", common.file_uploader_url),
            public_socket_gateway_url=env_str(env, "PUBLIC_SOCKET_GATEWAY_URL", ""),
            max_inflight_per_socket=env_int(env, "GATEWAY_MAX_INFLIGHT_PER_SOCKET", 64, minimum=1),
            max_inflight=env_int(env, "GATEWAY_MAX_INFLIGHT", 2048, minimum=1),
            max_inflight_bytes_per_socket=env_int(env, "GATEWAY_MAX_INFLIGHT_BYTES_PER_SOCKET", 32 * 1024 * 1024,
                                                  minimum=1024 * 1024),
            max_inflight_bytes=env_int(env, "GATEWAY_MAX_INFLIGHT_BYTES", 128 * 1024 * 1024, minimum=1024 * 1024),
            max_text_message_bytes=env_int(env, "GATEWAY_MAX_TEXT_MESSAGE_BYTES", 1024 * 1024, minimum=1024),
            assembly_budget_bytes=env_int(env, "GATEWAY_ASSEMBLY_BUDGET_BYTES", 128 * 1024 * 1024,
                                          minimum=1024 * 1024),
            header_timeout=_bounded(env, "GATEWAY_HEADER_TIMEOUT", 10.0, 0.5, 300.0),
            socket_timeout=_bounded(env, "GATEWAY_SOCKET_TIMEOUT", 60.0, 1.0, 3600.0),
            reauth_grace_seconds=_bounded(env, "GATEWAY_REAUTH_GRACE_SECONDS", 30.0, 0.5, 300.0),
            # pool_aggregator answers at most 1,000 results a page.
            catchup_page=min(env_int(env, "GATEWAY_CATCHUP_PAGE", 1000, minimum=1), 1000),
            max_catchups=env_int(env, "GATEWAY_MAX_CATCHUPS", 16, minimum=1),
            catchup_backlog=env_int(env, "GATEWAY_CATCHUP_BACKLOG", 400, minimum=1),
            catchup_drain_seconds=_bounded(env, "GATEWAY_CATCHUP_DRAIN_SECONDS", 30.0, 0.1, 600.0),
        )
        if settings.assembly_budget_bytes < settings.max_http_buffer_size:
            raise ConfigError("GATEWAY_ASSEMBLY_BUDGET_BYTES must hold at least one whole chunk message "
                              f"({settings.max_http_buffer_size} bytes)")
        if settings.max_inflight_bytes < settings.max_inflight_bytes_per_socket:
            raise ConfigError("GATEWAY_MAX_INFLIGHT_BYTES must be at least GATEWAY_MAX_INFLIGHT_BYTES_PER_SOCKET")
        if settings.socket_timeout <= settings.ping_interval + settings.ping_timeout:
            raise ConfigError("GATEWAY_SOCKET_TIMEOUT must exceed GATEWAY_PING_INTERVAL + GATEWAY_PING_TIMEOUT "
                              "(a live WebSocket is quiet that long between pongs)")
        return settings

    def cors_origins(self) -> str | list[str] | None:
        """``*``, the list, or None (same origin only: python-socketio reads ``[]`` as "no check")."""
        if self.cors_allowed_origins.strip() == "*":
            return "*"
        return [o.strip() for o in self.cors_allowed_origins.split(",") if o.strip()] or None
