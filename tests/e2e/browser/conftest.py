"""Fixtures for the dashboard's browser tests: headless Debian Chromium through Playwright.

The tests skip (with the reason) only when /usr/bin/chromium is missing and
cannot be installed; CI's test command installs it beforehand.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parents[3]
FRONTEND = REPO / "frontend"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def _install_chromium() -> str | None:
    """Why Chromium is unavailable, or None once /usr/bin/chromium exists."""
    if Path(CHROMIUM).exists():
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "cannot install it here (needs apt-get as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return None if Path(CHROMIUM).exists() else "apt-get installed no /usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    problem = _install_chromium()
    if problem:
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}, which is missing and {problem}")
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Console:
    """Console errors and uncaught page errors seen by one page."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.messages: list[str] = []

    def attach(self, page) -> None:
        def on_console(msg) -> None:
            self.messages.append(f"{msg.type}: {msg.text}")
            if msg.type == "error":
                self.errors.append(msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


@pytest.fixture
def new_page(chromium, tmp_path: Path):
    """Factory: a fresh browser context (own sessionStorage) and page; returns (page, console)."""
    contexts = []

    def make(viewport: dict | None = None):
        context = chromium.new_context(viewport=viewport or LAPTOP, accept_downloads=True)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        console = Console()
        console.attach(page)
        return page, console

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    config: bytes = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] == "/config.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
            return
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def static_site() -> Iterator[str]:
    """frontend/ served alone, with a config.json naming service URLs where nothing listens."""
    from devtools import infra

    dead = f"http://127.0.0.1:{infra.free_port()}"
    handler = functools.partial(type("H", (_StaticHandler,), {"config": json.dumps({
        "auth_url": dead, "file_service_manager_url": dead, "pool_aggregator_url": dead,
        "file_uploader_url": dead, "socket_gateway_url": ""}).encode()}), directory=str(FRONTEND))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
