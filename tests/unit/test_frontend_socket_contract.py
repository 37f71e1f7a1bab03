"""The dashboard and the gateway speak the Socket.IO events of services/common/socket_events.json.

The frontend's JS is read as text (no build step, no JS engine here): every event it
emits must be a client event of the contract, every event it listens for a server
event (or one Socket.IO raises itself), and the gateway built by create_app (which
connects to nothing) must handle every client event.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.common.socketcontract import CLIENT_EVENTS, SERVER_EVENTS
from services.socket_gateway.app import create_app, deps_of
from services.socket_gateway.config import Settings

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"

# Raised by socket.io-client itself (Socket and its Manager), never sent by the gateway.
BUILTIN_EVENTS = {"connect", "disconnect", "connect_error",
                  "reconnect", "reconnect_attempt", "reconnect_error", "reconnect_failed", "error", "ping"}

_NAME = r"""\(\s*["'`]([^"'`]+)["'`]"""
# socket.emit("x") / socket.timeout(ms).emitWithAck("x") / gateway.request("x", ...) (api.Gateway).
EMIT = re.compile(r"\.(?:emit|emitWithAck|request)" + _NAME)
# socket.on("x") / socket.once("x"), and the api.Gateway EventTarget's re-dispatched events.
LISTEN = re.compile(r"\.(?:on|once)" + _NAME + r"|\b(?:gw|gateway)\.addEventListener" + _NAME)
# An emit whose event name is not a literal: the scan above cannot see what it sends.
DYNAMIC_EMIT = re.compile(r"""\.(?:emit|emitWithAck)\(\s*([^"'`\s)][^,)]*)""")


def frontend_sources() -> dict[str, str]:
    skip = {"vendor", "node_modules"}
    return {str(p.relative_to(FRONTEND)): p.read_text()
            for p in sorted(FRONTEND.rglob("*.js"))
            if not skip & set(p.relative_to(FRONTEND).parts) and p.name != "eslint.config.js"}


def emitted(text: str) -> set[str]:
    return set(EMIT.findall(text))


def listened(text: str) -> set[str]:
    return {a or b for a, b in LISTEN.findall(text)}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    found = frontend_sources()
    assert {"api.js", "upload.js", "app.js"} <= set(found), sorted(found)
    return found


def test_the_scanner_sees_each_way_of_using_a_socket() -> None:
    sample = """
      socket.emit("bogus-out", {});
      await this.socket.timeout(5).emitWithAck('ack-out', p);
      const r = await state.gateway.request(`req-out`, {});
      this.socket.on("bogus-in", f); socket.once('once-in', g);
      gw.addEventListener("forwarded-in", h);
      button.addEventListener("click", k);
      socket.emitWithAck(name, p);
    """
    assert emitted(sample) == {"bogus-out", "ack-out", "req-out"}
    assert listened(sample) == {"bogus-in", "once-in", "forwarded-in"}  # DOM listeners are not socket events
    assert DYNAMIC_EMIT.findall(sample) == ["name"]
    # ...so the checks below would fail on an event outside the contract.
    assert emitted(sample) - set(CLIENT_EVENTS) == {"bogus-out", "ack-out", "req-out"}


def test_the_scan_finds_the_events_the_dashboard_is_known_to_use(sources: dict[str, str]) -> None:
    out = set().union(*map(emitted, sources.values()))
    into = set().union(*map(listened, sources.values()))
    assert {"start-transfer", "write-chunk", "complete-upload", "get-history", "get-results"} <= out, out
    assert {"file-status", "pool-result", "connect", "disconnect"} <= into, into


def test_the_dashboard_emits_only_client_events(sources: dict[str, str]) -> None:
    stray = {(name, event) for name, text in sources.items() for event in emitted(text)
             if event not in CLIENT_EVENTS}
    assert not stray, f"emitted by the dashboard, not a client event in socket_events.json: {sorted(stray)}"
    # The one emit with a computed name is api.Gateway.request, whose callers the scan reads.
    dynamic = {(name, expr.strip()) for name, text in sources.items() for expr in DYNAMIC_EMIT.findall(text)}
    assert dynamic == {("api.js", "event")}, dynamic


def test_the_dashboard_listens_only_to_server_events(sources: dict[str, str]) -> None:
    allowed = set(SERVER_EVENTS) | BUILTIN_EVENTS
    stray = {(name, event) for name, text in sources.items() for event in listened(text) if event not in allowed}
    assert not stray, f"listened to by the dashboard, not a server event in socket_events.json: {sorted(stray)}"


def test_the_gateway_handles_every_client_event(tmp_path: Path) -> None:
    app = create_app(Settings.from_env({"FRONTEND_DIR": str(tmp_path)}))
    handlers = set(deps_of(app).server.handlers.get("/", {}))
    assert {"connect", "disconnect"} <= handlers  # the introspection sees registrations at all
    missing = set(CLIENT_EVENTS) - handlers
    assert not missing, f"client events in socket_events.json with no gateway handler: {sorted(missing)}"
