"""Where the CPU goes while files are uploaded: CPU seconds per process, per MB and per file.

    python -m bench.cpu_split --gateway http://127.0.0.1:5000 --uploader http://127.0.0.1:5002 \
        [--door tus|socket] [--big-mb 50] [--files 200] [--clients 20] [--small-kb 200] [--patch-kb 1024] \
        [--mongo-pid PID]

The processes of the fleet under test are found by their environment (every service
gets ``FILE_UPLOADER_URL``; on a machine running several fleets only this one's
match), the MongoDB-wire server by ``--mongo-pid`` (secantusdb, started by the fleet's
launcher). Redis and RabbitMQ are shared with other fleets on this machine: their
CPU is reported too, but it includes everybody's.

For (a) one big file and (b) many small files from concurrent clients, through the
tus door (tuspy) or the Socket.IO door, it reads each process's utime+stime from
/proc before and after and prints CPU seconds per MB or per file and the wall time
(from the first byte to the last ``uploaded_successfully``). CPU seconds are the
comparable part on a loaded machine; wall time depends on everybody else's load.
For the call stacks behind the figures, run ``py-spy record --pid`` on a process
meanwhile (docs in README "Performance").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from .fleet_bench import random_file
from .peer_bench import MB, big_socket, big_tus, many, tus_upload
from .procs import SERVICE_NAMES

TICKS = os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def fleet_pids(uploader: str, mongo_pid: int | None) -> dict[str, list[int]]:
    """This fleet's service processes (by ``FILE_UPLOADER_URL``), the shared servers by name."""
    marker = f"FILE_UPLOADER_URL={uploader.rstrip('/')}".encode()
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        argv = _cmdline(pid)
        name = next((n for n in SERVICE_NAMES if f"services.{n}".encode() in argv), None)
        if name is not None and marker in _environ(pid).split(b"\0"):
            found.setdefault(name, []).append(pid)
        elif argv and os.path.basename(argv[0].split(b" ")[0]) == b"redis-server":
            found.setdefault("redis (shared)", []).append(pid)
        elif any(b"rabbit" in a for a in argv[:1]) or (argv and os.path.basename(argv[0]) == b"beam.smp"):
            found.setdefault("rabbitmq (shared)", []).append(pid)
    if mongo_pid:
        found["secantusdb"] = [mongo_pid]
    return found


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}


def report(title: str, unit: str, units: float, wall: float, before: dict[str, float],
           after: dict[str, float]) -> None:
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    ours = sum(v for k, v in used.items() if "shared" not in k)
    print(f"\n{title}: wall {wall:.2f} s; fleet CPU {ours:.2f} s = {ours / units * 1000:.1f} ms per {unit}")
    print(f"| process | CPU s | ms per {unit} | share of the fleet's |\n|---|---|---|---|")
    for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
        share = "" if "shared" in name else f"{seconds / ours * 100:.0f} %" if ours else ""
        print(f"| {name} | {seconds:.2f} | {seconds / units * 1000:.1f} | {share} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--uploader", default="http://127.0.0.1:5002")
    parser.add_argument("--door", choices=("tus", "socket"), default="tus")
    parser.add_argument("--big-mb", type=int, default=50)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--small-kb", type=int, default=200)
    parser.add_argument("--patch-kb", type=int, default=1024)
    parser.add_argument("--mongo-pid", type=int, default=None)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-many", action="store_true")
    args = parser.parse_args()
    from .fleet_bench import new_client

    pids = fleet_pids(args.uploader, args.mongo_pid)
    missing = [n for n in SERVICE_NAMES if n not in pids]
    if missing:
        raise SystemExit(f"no process of {missing} serves with FILE_UPLOADER_URL={args.uploader}")
    fleet_tus = args.uploader.rstrip("/") + "/files/"
    patch = args.patch_kb * 1024
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_big:
            big = random_file(work, args.big_mb * MB, "big.bin")
            before = snapshot(pids)
            started = time.perf_counter()
            if args.door == "tus":
                rate, tail = big_tus(fleet_tus, args.gateway, big, patch)
            else:
                rate, tail = big_socket(args.gateway, big)
            wall = time.perf_counter() - started
            report(f"{args.big_mb} MB, {args.door} door ({rate:.1f} MB/s, last byte to "
                   f"uploaded_successfully {tail:.2f} s)", "MB", args.big_mb, wall, before, snapshot(pids))
        if not args.skip_many:
            small = [random_file(work, args.small_kb * 1000, f"small-{i}.bin") for i in range(args.files)]
            clients = [new_client(args.gateway) for _ in range(args.clients)]
            pool = iter(clients)
            before = snapshot(pids)
            started = time.perf_counter()
            if args.door == "tus":
                rate = many(small, args.clients, lambda: next(pool),
                            lambda c, p: tus_upload(fleet_tus, c.token if c else None, p,
                                                    patch).rstrip("/").rsplit("/", 1)[1])
            else:
                rate = many(small, args.clients, lambda: next(pool),
                            lambda c, p: c.upload(p) if c is not None else None)
            wall = time.perf_counter() - started
            report(f"{args.files} x {args.small_kb} KB from {args.clients} clients, {args.door} door "
                   f"({rate:.1f} files/s)", "file", args.files, wall, before, snapshot(pids))


if __name__ == "__main__":
    main()
