"""Upload benchmark against a running fleet (start it with `make run`).

    python -m bench.fleet_bench [--gateway http://127.0.0.1:5000] [--big-mb 50] [--files 200] [--clients 20]

Prints: single-client MB/s for one large upload measured until
`uploaded_successfully`; files/s for many small files from concurrent clients
(each until `uploaded_successfully`); the peak RSS of every service meanwhile.
Targets on a 2-core machine: >= 40 MB/s, >= 60 files/s, <= 300 MB RSS.
It starts nothing itself.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from client.api import DropboxClient

from .procs import RssSampler


def _random_file(directory: Path, size: int, name: str) -> Path:
    path = directory / name
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            f.write(block)
            remaining -= len(block)
    return path


def _new_client(gateway: str) -> DropboxClient:
    client = DropboxClient(gateway)
    client.signup(f"bench_{uuid.uuid4().hex[:10]}", "bench-password-123")
    client.connect()
    return client


def big_upload(gateway: str, size_mb: int, workdir: Path) -> float:
    path = _random_file(workdir, size_mb * 1024 * 1024, "big.bin")
    client = _new_client(gateway)
    try:
        started = time.perf_counter()
        file_id = client.upload(path)
        client.wait_status(file_id, "uploaded_successfully", timeout=300)
        elapsed = time.perf_counter() - started
    finally:
        client.disconnect()
    return size_mb * 1024 * 1024 / elapsed / 1e6


def small_files(gateway: str, count: int, clients: int, size: int, workdir: Path) -> float:
    paths = [_random_file(workdir, size, f"small-{i}.bin") for i in range(count)]
    pool = [_new_client(gateway) for _ in range(clients)]
    errors: list[BaseException] = []

    def work(client: DropboxClient, mine: list[Path]) -> None:
        try:
            ids = [client.upload(p) for p in mine]
            for file_id in ids:
                client.wait_status(file_id, "uploaded_successfully", timeout=300)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, paths[i::clients])) for i, c in enumerate(pool)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in pool:
        c.disconnect()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--small-kb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as rss:
        workdir = Path(tmp)
        mbps = big_upload(args.gateway, args.big_mb, workdir)
        print(f"single client, {args.big_mb} MB to uploaded_successfully: {mbps:.1f} MB/s (target >= 40)")
        fps = small_files(args.gateway, args.files, args.clients, args.small_kb * 1000, workdir)
        print(f"{args.files} files of {args.small_kb} KB from {args.clients} clients: {fps:.1f} files/s "
              "(target >= 60)")
    print("peak RSS per service (MB, target <= 300):")
    for name, mb in rss.report().items():
        print(f"  {name:<22} {mb:8.1f}")


if __name__ == "__main__":
    main()
