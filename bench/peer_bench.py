"""Upload throughput next to a plain resumable-upload server (issue 13), in one run.

    python -m bench.peer_bench --gateway http://127.0.0.1:5000 --uploader http://127.0.0.1:5002 \
        [--big-mb 50] [--files 200] [--clients 20] [--small-kb 200] [--patch-kb 1024]

The peer is ``@tus/server`` 2.4.5 with ``@tus/file-store`` 2.1.1 under Node, installed
from npm on first use into ``--cache`` (default ``~/.cache/file-dropbox/peer-bench``,
outside the repository) and started on a free loopback port. The fleet is not
started here: its gateway (Socket.IO door, sign-up, ``file-status`` events) and
file_uploader (tus door) URLs are given on the command line.

Measured, every figure with the same Python tus client (tuspy, ``--patch-kb`` PATCHes)
where the protocol allows:

- 50 MB through tus to ``uploaded_successfully`` (the peer: to its last PATCH's answer,
  i.e. stored in its file store), and through the Socket.IO door (client library);
- 200 x 200 KB from 20 clients through tus and through the Socket.IO door, each file
  to ``uploaded_successfully``;
- the time from the last byte (last PATCH answered / complete-upload acknowledged) to
  ``uploaded_successfully`` of the 50 MB file, on both doors.

It prints each figure, its ratio to the peer and the issue's target.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tusclient import client as tus_client

from client.api import DropboxClient

from .fleet_bench import new_client, random_file, run_split

PEER_PACKAGES = ("@tus/server@2.4.5", "@tus/file-store@2.1.1")
MB = 1_000_000
PEER_SERVER = """
import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'
const [port, directory] = process.argv.slice(2)
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) })
http.createServer((req, res) => tus.handle(req, res)).listen(Number(port), '127.0.0.1',
  () => console.log('listening'))
"""


# --- the peer ---------------------------------------------------------------------------------
def install_peer(cache: Path) -> Path:
    if not (cache / "node_modules" / "@tus" / "server").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"private": true, "type": "module"}\n')
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", *PEER_PACKAGES], cwd=cache, check=True,
                       timeout=600)
    (cache / "server.mjs").write_text(PEER_SERVER)
    return cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_peer(cache: Path, store_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(["node", str(cache / "server.mjs"), str(port), str(store_dir)], cwd=cache,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30  # Node starts in well under a second; 30 s on a loaded machine
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/files"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("@tus/server did not start")


# --- clients ---------------------------------------------------------------------------------------
def tus_upload(endpoint: str, token: str | None, path: Path, patch_bytes: int) -> str:
    """One file through tuspy; returns the upload URL once the last PATCH is answered."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tus = tus_client.TusClient(endpoint, headers=headers)
    with open(path, "rb") as stream:
        uploader = tus.uploader(file_stream=stream, chunk_size=patch_bytes, metadata={"filename": path.name})
        uploader.upload()
    return str(uploader.url)


def big_tus(endpoint: str, gateway: str | None, path: Path, patch_bytes: int) -> tuple[float, float]:
    """(MB/s to uploaded_successfully, seconds from the last byte to it); the peer has no events."""
    client = new_client(gateway) if gateway else None
    try:
        started = time.perf_counter()
        url = tus_upload(endpoint, client.token if client else None, path, patch_bytes)
        last_byte = time.perf_counter()
        if client is not None:
            client.wait_status(url.rstrip("/").rsplit("/", 1)[1], "uploaded_successfully", timeout=600)
        done = time.perf_counter()
    finally:
        if client is not None:
            client.disconnect()
    return path.stat().st_size / (done - started) / MB, done - last_byte


def big_socket(gateway: str, path: Path) -> tuple[float, float]:
    client = new_client(gateway)
    try:
        started = time.perf_counter()
        file_id = client.upload(path)  # returns once complete-upload is acknowledged: the last byte
        last_byte = time.perf_counter()
        client.wait_status(file_id, "uploaded_successfully", timeout=600)
        done = time.perf_counter()
    finally:
        client.disconnect()
    return path.stat().st_size / (done - started) / MB, done - last_byte


def many(paths: list[Path], clients: int, make: Callable[[], DropboxClient | None],
         send: Callable[[DropboxClient | None, Path], str | None]) -> float:
    """files/s: ``clients`` threads, each sending its share and waiting for every file's success."""
    pool = [make() for _ in range(clients)]
    failures: list[BaseException] = []

    def work(client: DropboxClient | None, mine: list[Path]) -> None:
        try:
            ids = [send(client, p) for p in mine]
            if client is not None:
                for file_id in ids:
                    client.wait_status(str(file_id), "uploaded_successfully", timeout=600)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    elapsed = run_split(pool, paths, work)
    for c in pool:
        if c is not None:
            c.disconnect()
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed: {failures[0]!r}")
    return len(paths) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--uploader", default="http://127.0.0.1:5002", help="file_uploader (the tus door)")
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--small-kb", type=int, default=200)
    parser.add_argument("--patch-kb", type=int, default=1024, help="tuspy's PATCH size (the issue: 1 MiB)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "file-dropbox" / "peer-bench")
    args = parser.parse_args()
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("node and npm are needed for the peer (@tus/server)")
    patch = args.patch_kb * 1024
    fleet_tus = args.uploader.rstrip("/") + "/files/"
    cache = install_peer(args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "peer-store"
        store.mkdir()
        big = random_file(work, args.big_mb * MB, "big.bin")
        small = [random_file(work, args.small_kb * 1000, f"small-{i}.bin") for i in range(args.files)]
        peer, peer_url = start_peer(cache, store)
        try:
            peer_big, _ = big_tus(peer_url, None, big, patch)
            peer_many = many(small, args.clients, lambda: None,
                             lambda _c, p: tus_upload(peer_url, None, p, patch))
        finally:
            peer.kill()
            peer.wait(timeout=10)
        tus_big, tus_tail = big_tus(fleet_tus, args.gateway, big, patch)
        sock_big, sock_tail = big_socket(args.gateway, big)

        def tus_send(c: DropboxClient | None, p: Path) -> str:
            assert c is not None
            return tus_upload(fleet_tus, c.token, p, patch).rstrip("/").rsplit("/", 1)[1]

        tus_many = many(small, args.clients, lambda: new_client(args.gateway), tus_send)
        sock_many = many(small, args.clients, lambda: new_client(args.gateway),
                         lambda c, p: c.upload(p) if c is not None else None)
    rows = [
        (f"{args.big_mb} MB, tus door, to uploaded_successfully", f"{tus_big:.1f} MB/s", tus_big / peer_big, ">= 0.8"),
        (f"{args.big_mb} MB, Socket.IO door, to uploaded_successfully", f"{sock_big:.1f} MB/s",
         sock_big / peer_big, ">= 0.6"),
        (f"{args.files} x {args.small_kb} KB from {args.clients} clients, tus door", f"{tus_many:.1f} files/s",
         tus_many / peer_many, ">= 0.5"),
        (f"{args.files} x {args.small_kb} KB from {args.clients} clients, Socket.IO door",
         f"{sock_many:.1f} files/s", sock_many / peer_many, ">= 0.4"),
    ]
    print(f"peer @tus/server 2.4.5 + @tus/file-store 2.1.1: {args.big_mb} MB at {peer_big:.1f} MB/s; "
          f"{args.files} x {args.small_kb} KB at {peer_many:.1f} files/s (tuspy, {args.patch_kb} KiB PATCHes)")
    print("| work | this fleet | ratio to @tus/server | target |\n|---|---|---|---|")
    for name, figure, ratio, target in rows:
        print(f"| {name} | {figure} | {ratio:.2f} | {target} |")
    print(f"| last byte to uploaded_successfully, {args.big_mb} MB, tus door | {tus_tail:.2f} s | | <= 0.5 s |")
    print(f"| last byte to uploaded_successfully, {args.big_mb} MB, Socket.IO door | {sock_tail:.2f} s | | "
          "<= 0.5 s |")


if __name__ == "__main__":
    main()
