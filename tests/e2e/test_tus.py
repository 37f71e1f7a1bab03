"""The tus door with real tus clients nobody here wrote, against the running fleet.

tuspy (PyPI) and tus-js-client under Node (npm; tests/e2e/tus_js, installed on first
use) upload, pause and resume, resume after a dropped connection, and terminate.
Every finished upload is watched to ``uploaded_successfully`` over Socket.IO and
checked against the history's sha256.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client

from .helpers import RawSocket, bearer, sha256_hex, signup

pytestmark = pytest.mark.e2e

HARNESS = Path(__file__).parent / "tus_js"
TUS = {"Tus-Resumable": "1.0.0"}


def payload(size: int) -> bytes:
    # A harmless first few bytes: random ones could sniff as an executable (refused by design).
    return b"DATA" + os.urandom(size - 4)


@pytest.fixture
def user(fleet):
    account = signup(fleet.urls["auth"])
    sock = RawSocket(fleet.gateway, account["access_token"])
    yield {**account, "socket": sock}
    sock.close()


def endpoint(fleet) -> str:
    return f"{fleet.urls['file_uploader']}/files/"


def assert_stored(fleet, user, file_id: str, data: bytes, name: str) -> None:
    """``uploaded_successfully`` told over Socket.IO, and the history's record has the right sha256."""
    user["socket"].wait_event("file-status", lambda d: d.get("file_id") == file_id
                              and d.get("status") == "uploaded_successfully", timeout=90)
    r = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}",
                     headers=bearer(user["access_token"]), timeout=10)
    assert r.status_code == 200, r.text
    [record] = [f for f in r.json()["files"] if f["file_id"] == file_id]
    assert (record["sha256"], record["size"], record["file_name"]) == (sha256_hex(data), len(data), name)
    assert record["status"] == "uploaded_successfully"


def file_id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


# --- tuspy ------------------------------------------------------------------------------
def test_tuspy_uploads_with_checksums(fleet, user, tmp_path) -> None:
    data = payload(1_500_000)
    client = tus_client.TusClient(endpoint(fleet), headers=bearer(user["access_token"]))
    # 300,000-byte PATCHes end mid-chunk (chunks are 4 MiB): the server keeps the tail in Redis.
    uploader = client.uploader(file_stream=_stream(tmp_path, data), chunk_size=300_000,
                               metadata={"filename": "tuspy.bin"}, upload_checksum=True)
    uploader.upload()
    assert_stored(fleet, user, file_id_of(uploader.url), data, "tuspy.bin")


def test_tuspy_pauses_and_a_new_client_resumes_from_the_servers_offset(fleet, user, tmp_path) -> None:
    data = payload(1_200_000)
    first = tus_client.TusClient(endpoint(fleet), headers=bearer(user["access_token"]))
    uploader = first.uploader(file_stream=_stream(tmp_path, data), chunk_size=256_000,
                              metadata={"filename": "paused.bin"})
    uploader.upload(stop_at=500_000)
    url = uploader.url
    # A new client (another process, after a restart) knows only the upload's URL.
    second = tus_client.TusClient(endpoint(fleet), headers=bearer(user["access_token"]))
    resumed = second.uploader(file_stream=_stream(tmp_path, data), url=url, chunk_size=256_000)
    assert resumed.offset == 500_000  # HEAD: where the first stopped, mid-chunk (the tail in Redis)
    resumed.upload()
    assert_stored(fleet, user, file_id_of(url), data, "paused.bin")


def test_tuspy_upload_terminated(fleet, user, tmp_path) -> None:
    data = payload(900_000)
    client = tus_client.TusClient(endpoint(fleet), headers=bearer(user["access_token"]))
    uploader = client.uploader(file_stream=_stream(tmp_path, data), chunk_size=300_000,
                               metadata={"filename": "dropped.bin"})
    uploader.upload(stop_at=300_000)
    # tuspy has no termination call: the DELETE it would send, with its own headers.
    r = requests.delete(uploader.url, headers=uploader.get_headers(), timeout=10)
    assert r.status_code == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert requests.head(uploader.url, headers=uploader.get_headers(), timeout=10).status_code == 410
    r = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}",
                     headers=bearer(user["access_token"]), timeout=10)
    assert file_id_of(uploader.url) not in {f["file_id"] for f in r.json()["files"]}


def _stream(tmp_path: Path, data: bytes):
    path = tmp_path / f"src-{sha256_hex(data)[:8]}.bin"
    if not path.exists():
        path.write_bytes(data)
    return open(path, "rb")  # noqa: SIM115 - tuspy reads it; closed with the test's tmp_path


# --- tus-js-client under Node --------------------------------------------------------------
@pytest.fixture(scope="module")
def node_harness() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for tus-js-client")
    if not (HARNESS / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HARNESS, check=True, timeout=300,
                       capture_output=True)
    return HARNESS


def run_js(harness: Path, **args) -> dict:
    done = subprocess.run(["node", str(harness / "upload.mjs"), json.dumps(args)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


class DroppingProxy:
    """A TCP relay to the uploader that cuts the first connection once it has carried
    ``drop_after`` request bytes (a PATCH killed mid-way); later connections pass untouched."""

    def __init__(self, target: str, drop_after: int) -> None:
        host, port = target.split("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.drop_after = drop_after
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            cut = self.dropped == 0
            threading.Thread(target=self._pump, args=(downstream, upstream, cut), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        carried = 0
        try:
            while True:
                block = src.recv(65536)  # one relay buffer: 64 KiB
                if not block:
                    break
                carried += len(block)
                if cut and self.dropped == 0 and carried > self.drop_after:
                    self.dropped += 1
                    break
                dst.sendall(block)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_tus_js_client_uploads_and_resumes_after_a_dropped_connection(fleet, user, tmp_path,
                                                                    node_harness) -> None:
    data = payload(2_000_000)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    proxy = DroppingProxy(fleet.urls["file_uploader"], drop_after=400_000)
    try:
        result = run_js(node_harness, endpoint=f"http://127.0.0.1:{proxy.port}/files/",
                        token=user["access_token"], file=str(source), filename="js.bin", chunkSize=600_000,
                        mode="upload")
    finally:
        proxy.close()
    assert proxy.dropped == 1 and result["retries"] >= 1, result
    assert_stored(fleet, user, file_id_of(result["url"]), data, "js.bin")


def test_tus_js_client_pauses_and_resumes(fleet, user, tmp_path, node_harness) -> None:
    data = payload(1_000_000)
    source = tmp_path / "pause.bin"
    source.write_bytes(data)
    result = run_js(node_harness, endpoint=endpoint(fleet), token=user["access_token"], file=str(source),
                    filename="pause.bin", chunkSize=300_000, mode="pause")
    assert result["paused"] is True
    assert_stored(fleet, user, file_id_of(result["url"]), data, "pause.bin")


def test_tus_js_client_terminates(fleet, user, tmp_path, node_harness) -> None:
    data = payload(1_000_000)
    source = tmp_path / "term.bin"
    source.write_bytes(data)
    result = run_js(node_harness, endpoint=endpoint(fleet), token=user["access_token"], file=str(source),
                    filename="term.bin", chunkSize=300_000, mode="terminate")
    assert result["terminated"] is True and result["offset"] == 300_000
    head = requests.head(result["url"], headers={**TUS, **bearer(user["access_token"])}, timeout=10)
    assert head.status_code == 410
    time.sleep(0.5)
    r = requests.get(f"{fleet.urls['file_service_manager']}/client/history/{user['user_id']}",
                     headers=bearer(user["access_token"]), timeout=10)
    assert file_id_of(result["url"]) not in {f["file_id"] for f in r.json()["files"]}
