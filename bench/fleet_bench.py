"""Upload benchmark against a running fleet (start it with `make run`).

    python -m bench.fleet_bench [--gateway http://127.0.0.1:5000] [--big-mb 50] [--files 200] [--clients 20]
    python -m bench.fleet_bench --replicas 2 [--fanout-members 200]
    python -m bench.fleet_bench --backend {gridfs,filesystem,s3} [--big-mb 50] [--files 200]

With ``--replicas N`` it starts a fleet of its own instead (N processes of each
service behind HAProxy, ``devtools.fleet.ReplicatedFleet``, on free ports with
a database, vhost, Redis prefix and MongoDB database of its own), measures,
adds the result fan-out of ``bench.pool_bench`` when ``--fanout-members`` is
given, and stops it: run it with 1 and with 2 to compare (docs/SCALING.md).

Prints: single-client MB/s for one large upload measured until
`uploaded_successfully`, and the seconds from its last chunk's ack to
`uploaded_successfully` (what the owner waits for once every byte is sent);
files/s for many small files from concurrent clients (each until
`uploaded_successfully`); the peak RSS of every service meanwhile.
Targets on a 2-core machine: >= 40 MB/s, >= 60 files/s, <= 300 MB RSS.
Without ``--replicas`` it starts nothing itself.

``--backend`` starts a fleet of its own too (one replica unless ``--replicas`` says
otherwise) whose DEFAULT_STORAGE is that backend: GridFS in its MongoDB database, a
filesystem root in a temporary directory, or a bucket of a local S3 server (moto's,
started for the run; ``S3_TEST_ENDPOINT`` to use another). The uploads carry no pool, so
every byte goes to that backend: the figures compare the backends under the same fleet.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.api import DropboxClient

from .procs import RssSampler


def random_file(directory: Path, size: int, name: str) -> Path:
    """``size`` random bytes behind a harmless head (random bytes could sniff as an executable)."""
    path = directory / name
    with open(path, "wb") as f:
        f.write(b"DATA"[:size])
        remaining = max(0, size - 4)
        while remaining:
            block = os.urandom(min(remaining, 1 << 20))
            f.write(block)
            remaining -= len(block)
    return path


def new_client(gateway: str) -> DropboxClient:
    """A freshly signed-up user, connected."""
    client = DropboxClient(gateway)
    client.signup(f"bench_{uuid.uuid4().hex[:10]}", "bench-password-123")
    client.connect()
    return client


def run_split(pool: list[Any], paths: list[Path], work: Callable[[Any, list[Path]], None]) -> float:
    """``work(client, its paths)`` for every client at once, each taking every len(pool)-th path;
    answers the seconds until all are done."""
    threads = [threading.Thread(target=work, args=(c, paths[i::len(pool)])) for i, c in enumerate(pool)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def big_upload(gateway: str, size_mb: int, workdir: Path) -> tuple[float, float]:
    """MB/s from the first byte to ``uploaded_successfully``, and the seconds from the last chunk's
    ack (every byte cached) to ``uploaded_successfully``: the store's share the owner waits for."""
    path = random_file(workdir, size_mb * 1024 * 1024, "big.bin")
    client = new_client(gateway)
    last_byte: list[float] = []  # one entry: when the last chunk was acknowledged

    def progress(sent: int, total: int) -> None:
        if sent >= total and not last_byte:
            last_byte.append(time.perf_counter())

    try:
        started = time.perf_counter()
        file_id = client.upload(path, on_progress=progress)
        client.wait_status(file_id, "uploaded_successfully", timeout=300)
        done = time.perf_counter()
    finally:
        client.disconnect()
    tail = done - (last_byte[0] if last_byte else done)
    return size_mb * 1024 * 1024 / (done - started) / 1e6, tail


def small_files(gateway: str, count: int, clients: int, size: int, workdir: Path) -> float:
    paths = [random_file(workdir, size, f"small-{i}.bin") for i in range(count)]
    pool = [new_client(gateway) for _ in range(clients)]
    errors: list[BaseException] = []

    def work(client: DropboxClient, mine: list[Path]) -> None:
        try:
            ids = [client.upload(p) for p in mine]
            for file_id in ids:
                client.wait_status(file_id, "uploaded_successfully", timeout=300)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    elapsed = run_split(pool, paths, work)
    for c in pool:
        c.disconnect()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    return count / elapsed


def backend_env(backend: str, workdir: Path) -> tuple[dict[str, str], Any]:
    """DEFAULT_STORAGE (and its key) for ``backend``; the S3 server started for it, if any."""
    import json

    from devtools import infra
    from services.common.secretbox import SecretBox

    if backend == "gridfs":
        return {"DEFAULT_STORAGE": json.dumps({"backend": "gridfs"})}, None
    if backend == "filesystem":
        root = workdir / "files"
        root.mkdir()
        return {"DEFAULT_STORAGE": json.dumps({"backend": "filesystem", "root": str(root)})}, None
    import boto3

    server = None
    endpoint = os.environ.get("S3_TEST_ENDPOINT")
    if not endpoint:
        port = infra.free_port()
        server = infra.start_s3(port, workdir / "moto.log")
        endpoint = f"http://127.0.0.1:{port}"
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    key_id, secret = "bench-key-id", "bench-secret-key"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                 aws_secret_access_key=secret).create_bucket(Bucket=bucket)
    spec = {"backend": "s3", "endpoint_url": endpoint, "bucket": bucket, "region": "us-east-1",
            "access_key_id": key_id, "secret_access_key": secret}
    return {"DEFAULT_STORAGE": json.dumps(spec), "STORAGE_SECRETS_KEY": SecretBox.generate_key()}, server


def own_fleet(replicas: int, workdir: Path, extra: dict[str, str] | None = None):
    """A fleet of ``replicas`` per service of the bench's own; returns (fleet, env, mongo process)."""
    from devtools import infra
    from devtools.fleet import ReplicatedFleet, free_base_port

    infra.ensure_all()
    mongo = None
    mongo_uri = os.environ.get("MONGODB_URI")
    if not mongo_uri:
        port = infra.free_port()
        mongo = infra.start_secantus(port, workdir / "mongo", workdir / "secantus.log")
        mongo_uri = f"mongodb://127.0.0.1:{port}"
    tag = uuid.uuid4().hex[:8]
    env = {"DROPBOX_ENV": "development", "DATABASE_URL": infra.create_postgres_db("dropbox_bench"),
           "AMQP_URL": infra.create_vhost("dropbox_bench"), "REDIS_PREFIX": f"bench:{tag}",
           "MONGODB_URI": mongo_uri, "MONGODB_DB": f"bench_{tag}", "LOG_LEVEL": "WARNING",
           "ADMIN_USER": "admin", "ADMIN_PASSWORD": "admin-password", **(extra or {})}
    fleet = ReplicatedFleet(env, replicas, base=free_base_port(replicas), log_dir=workdir / "logs",
                            run_dir=workdir)
    try:
        fleet.start(timeout=240)
    except Exception:
        fleet.stop()
        raise
    return fleet, env, mongo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--small-kb", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=0,
                        help="start a fleet of N processes per service behind HAProxy, measure it, stop it")
    parser.add_argument("--fanout-members", type=int, default=0,
                        help="with --replicas: also run bench.pool_bench with this many members")
    parser.add_argument("--backend", choices=("gridfs", "filesystem", "s3"),
                        help="start a fleet of its own storing to this backend (DEFAULT_STORAGE), measure, stop it")
    args = parser.parse_args()
    if args.backend and not args.replicas:
        args.replicas = 1
    if args.replicas:
        from devtools import infra

        with tempfile.TemporaryDirectory() as tmp:
            extra, s3_server = backend_env(args.backend, Path(tmp)) if args.backend else ({}, None)
            fleet, env, mongo = own_fleet(args.replicas, Path(tmp), extra)
            try:
                args.gateway = fleet.urls["socket_gateway"]
                print(f"fleet: {args.replicas} replica(s) of each service behind HAProxy at {args.gateway}"
                      + (f", storage backend {args.backend}" if args.backend else ""))
                measure(args)
                if args.fanout_members:
                    from . import pool_bench

                    pool_bench.main(["--gateway", args.gateway, "--members", str(args.fanout_members),
                                     "--contributors", str(min(20, args.fanout_members)),
                                     "--downloaders", str(min(100, args.fanout_members)),
                                     "--users-cache", str(Path(tmp) / "users.json")])
            finally:
                fleet.stop()
                infra.drop_postgres_db(env["DATABASE_URL"])
                infra.delete_vhost(env["AMQP_URL"])
                if mongo is not None:
                    infra.stop_process(mongo)
                if s3_server is not None:
                    infra.stop_process(s3_server)
        return
    measure(args)


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as rss:
        workdir = Path(tmp)
        mbps, tail = big_upload(args.gateway, args.big_mb, workdir)
        print(f"single client, {args.big_mb} MB to uploaded_successfully: {mbps:.1f} MB/s (target >= 40); "
              f"last byte -> uploaded_successfully {tail:.2f} s")
        fps = small_files(args.gateway, args.files, args.clients, args.small_kb * 1000, workdir)
        print(f"{args.files} files of {args.small_kb} KB from {args.clients} clients: {fps:.1f} files/s "
              "(target >= 60)")
    print("peak RSS per service (MB, target <= 300):")
    for name, mb in rss.report().items():
        print(f"  {name:<22} {mb:8.1f}")


if __name__ == "__main__":
    main()
