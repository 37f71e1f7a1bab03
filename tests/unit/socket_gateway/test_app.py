"""The gateway's Flask side (dashboard, /config.json, metrics) and its settings, without a network."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import ConfigError
from services.socket_gateway import config, wsfast
from services.socket_gateway.app import create_app, deps_of
from services.socket_gateway.config import Settings


@pytest.fixture
def frontend(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<h1>dashboard</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    return tmp_path


def make_app(frontend: Path, **env: str):
    return create_app(Settings.from_env({"FRONTEND_DIR": str(frontend), **env}))


def test_settings_defaults_and_limits() -> None:
    s = Settings.from_env({})
    assert s.port == 5000 and s.max_connections == 10000
    assert s.max_http_buffer_size == s.max_chunk_bytes + config.CHUNK_HEADROOM
    assert (s.catchup_page, s.max_catchups, s.catchup_backlog) == (1000, 16, 400)
    assert Settings.from_env({"GATEWAY_CATCHUP_PAGE": "5000"}).catchup_page == 1000  # pool_aggregator's max
    assert s.frontend_dir == config.REPO_ROOT / "frontend"
    s = Settings.from_env({"SOCKET_GATEWAY_PORT": "6001", "GATEWAY_MAX_CONNECTIONS": "7",
                           "GATEWAY_CORS_ORIGINS": "http://a, http://b"})
    assert (s.port, s.max_connections, s.cors_origins()) == (6001, 7, ["http://a", "http://b"])
    with pytest.raises(ConfigError):
        Settings.from_env({"GATEWAY_MAX_CONNECTIONS": "0"})


def test_dashboard_and_config(frontend: Path) -> None:
    app = make_app(frontend, PUBLIC_AUTH_URL="https://auth.example", FILE_SERVICE_MANAGER_URL="http://fsm:1")
    client = app.test_client()
    assert client.get("/").data == b"<h1>dashboard</h1>"
    assert client.get("/app.js").status_code == 200
    assert client.get("/missing.js").status_code == 404
    assert client.get("/missing.js").get_json()["error"]["code"] == "not_found"
    assert client.get("/../secret").status_code == 404
    assert client.get("/%2e%2e/pyproject.toml").status_code == 404
    doc = client.get("/config.json").get_json()
    assert doc["auth_url"] == "https://auth.example"
    assert doc["file_service_manager_url"] == "http://fsm:1"
    assert doc["pool_aggregator_url"] == "http://127.0.0.1:5004"
    assert doc["file_uploader_url"] == "http://127.0.0.1:5002"
    assert doc["socket_gateway_url"] == ""  # the dashboard then connects to its own origin
    # Exactly the keys frontend/api.js loadConfig() reads, no more.
    assert set(doc) == {"auth_url", "file_service_manager_url", "pool_aggregator_url", "file_uploader_url",
                        "socket_gateway_url"}
    assert client.get("/health").get_json()["status"] == "ok"
    other = make_app(frontend, PUBLIC_SOCKET_GATEWAY_URL="https://ws.example").test_client()
    assert other.get("/config.json").get_json()["socket_gateway_url"] == "https://ws.example"


def test_frontend_subdirectories_are_served_as_javascript(frontend: Path) -> None:
    (frontend / "views").mkdir()
    (frontend / "views" / "upload.js").write_text("export const x = 1;")
    client = make_app(frontend).test_client()
    for path in ("/app.js", "/views/upload.js"):
        answer = client.get(path)
        assert answer.status_code == 200
        # A module script is refused unless its MIME type is a JavaScript one.
        assert answer.mimetype in ("text/javascript", "application/javascript"), (path, answer.mimetype)
    assert client.get("/views/missing.js").status_code == 404


def test_metrics_report_limits_and_fast_unmask(frontend: Path) -> None:
    from eventlet.websocket import RFC6455WebSocket

    app = make_app(frontend, GATEWAY_MAX_CONNECTIONS="123")
    original = RFC6455WebSocket.__dict__["_apply_mask"]
    try:
        text = app.test_client().get("/metrics").text
        assert "gateway_max_connections 123.0" in text
        assert "gateway_ws_fast_unmask 0.0" in text
        wsfast.install()
        text = app.test_client().get("/metrics").text
        assert "gateway_ws_fast_unmask 1.0" in text
        assert "gateway_connected_sockets 0.0" in text
    finally:
        RFC6455WebSocket._apply_mask = original


def test_socketio_server_configured(frontend: Path) -> None:
    server = deps_of(make_app(frontend, MAX_CHUNK_BYTES="1048576", REDIS_PREFIX="pfx")).server
    assert server.eio.max_http_buffer_size == 1048576 + config.CHUNK_HEADROOM
    assert server.manager.channel == "pfx:socketio"
    assert set(server.handlers["/"]) >= {"connect", "disconnect", "start-transfer", "write-chunk",
                                         "complete-upload", "get-history", "get-results", "alive"}


def test_message_cap_settings() -> None:
    s = Settings.from_env({})
    assert (s.max_text_message_bytes, s.assembly_budget_bytes) == (1024 * 1024, 128 * 1024 * 1024)
    s = Settings.from_env({"GATEWAY_MAX_TEXT_MESSAGE_BYTES": "4096", "GATEWAY_ASSEMBLY_BUDGET_BYTES": "33554432"})
    assert (s.max_text_message_bytes, s.assembly_budget_bytes) == (4096, 32 * 1024 * 1024)
    with pytest.raises(ConfigError):  # a budget that cannot hold one whole chunk message
        Settings.from_env({"MAX_CHUNK_BYTES": str(8 << 20), "GATEWAY_ASSEMBLY_BUDGET_BYTES": str(4 << 20)})


def test_timeout_settings_are_bounded() -> None:
    s = Settings.from_env({})
    assert (s.header_timeout, s.socket_timeout) == (10.0, 60.0)
    assert s.socket_timeout > s.ping_interval + s.ping_timeout
    s = Settings.from_env({"GATEWAY_HEADER_TIMEOUT": "2", "GATEWAY_SOCKET_TIMEOUT": "9", "GATEWAY_PING_INTERVAL": "2",
                           "GATEWAY_PING_TIMEOUT": "3"})
    assert (s.header_timeout, s.socket_timeout) == (2.0, 9.0)
    for env in ({"GATEWAY_PING_INTERVAL": "0"}, {"GATEWAY_PING_TIMEOUT": "86400"}, {"GATEWAY_PING_TIMEOUT": "nan"},
                {"GATEWAY_HEADER_TIMEOUT": "0"}, {"GATEWAY_SOCKET_TIMEOUT": "40"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)


def test_serving_tunes_the_collector_for_thousands_of_sockets() -> None:
    """server.tune_gc: the startup heap frozen out of the collector's walks, a larger young generation
    (full collections of a 5,000-socket heap stopped the hub for 0.7-1.9 s: README "Issue 11")."""
    import gc

    from services.socket_gateway import server

    before = gc.get_threshold()
    try:
        server.tune_gc()
        assert gc.get_threshold() == server.GC_THRESHOLDS and server.GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_runtime_starts_the_audit_trail_result_deliveries_record_into(frontend: Path) -> None:
    from services.common.runtime import runtime_of

    app = make_app(frontend)
    assert runtime_of(app).audit is deps_of(app).audit
