"""Hostile-client benchmark against a running fleet (start it with `make run`).

    python -m bench.hostile_bench [--gateway http://127.0.0.1:5000] [--hostile 1000] [--clients 20] [--files 100]

Issue 10's flood: ``--hostile`` anonymous WebSocket connections each send a
text message whose frames never end (no FIN), as fast as the gateway lets
them, while ``--clients`` normal users upload ``--files`` files of 200 KB in
all. Prints how many hostile sockets the gateway closed, how many bytes it was
made to take, the normal clients' files/s and whether every upload reached
``uploaded_successfully``, and the gateway's peak RSS (target: under its
Kubernetes memory limit). It starts nothing itself and stops by itself: every
loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from devtools import hostile

from .fleet_bench import small_files
from .procs import RssSampler

MANIFEST = Path(__file__).resolve().parents[1] / "kubernetes" / "socket-gateway.yaml"


def gateway_memory_limit_mb() -> float:
    """The gateway container's ``resources.limits.memory`` in the Kubernetes manifest (Mi or Gi)."""
    import yaml

    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                limit = str(container["resources"]["limits"]["memory"])
                return float(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    raise RuntimeError(f"no Deployment with a memory limit in {MANIFEST}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:5000")
    parser.add_argument("--hostile", type=int, default=1000, help="hostile sockets (default 1000)")
    parser.add_argument("--per-socket-mb", type=float, default=8.0, help="bytes each hostile socket tries to send")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the flood may last")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--small-kb", type=int, default=200)
    args = parser.parse_args()

    flood_report: list[hostile.FloodReport] = []

    def attack() -> None:
        flood_report.append(hostile.fragment_flood(args.gateway, args.hostile,
                                                    per_socket_bytes=int(args.per_socket_mb * (1 << 20)),
                                                    deadline=args.seconds))

    with tempfile.TemporaryDirectory() as tmp, RssSampler() as rss:
        attacker = threading.Thread(target=attack, daemon=True)
        attacker.start()
        time.sleep(2.0)  # let the flood open its sockets before the normal users arrive
        started = time.perf_counter()
        error = ""
        try:
            fps = small_files(args.gateway, args.files, args.clients, args.small_kb * 1000, Path(tmp))
        except RuntimeError as exc:
            fps, error = 0.0, str(exc)
        normal_seconds = time.perf_counter() - started
        attacker.join(args.seconds + 30)
    report = flood_report[0] if flood_report else None
    if report:
        print(f"hostile sockets: {report.sockets} opened ({report.refused_at_handshake} refused at the handshake), "
              f"{report.closed_by_server} closed by the gateway, {report.still_open} still open after "
              f"{report.seconds:.1f} s; {report.bytes_sent / 1e6:.1f} MB accepted from them")
    status = "all uploaded_successfully" if not error else f"FAILED: {error}"
    print(f"normal clients: {args.files} files of {args.small_kb} KB from {args.clients} clients in "
          f"{normal_seconds:.1f} s, {fps:.1f} files/s, {status}")
    peak = rss.report()
    gateway_mb = peak.get("socket_gateway", 0.0)
    limit = gateway_memory_limit_mb()
    verdict = "within" if gateway_mb < limit else "OVER"
    print(f"gateway peak RSS {gateway_mb:.1f} MB ({verdict} its {limit:.0f} MiB Kubernetes limit)")
    for name, mb in peak.items():
        print(f"  {name:<22} {mb:8.1f} MB")


if __name__ == "__main__":
    main()
