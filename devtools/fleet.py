"""Run the whole fleet as local processes: ``make run`` and the end-to-end tests.

    python -m devtools.fleet run          # foreground; Ctrl-C or SIGTERM stops everything

Each service starts exactly as in docker-compose and Kubernetes,
``python -m services.<name>``, with its environment. Output lines are prefixed
with the service name (and kept in ``.run/logs/<name>.log``). The fleet is
ready when every service answers ``GET /ready`` with 200.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from . import infra

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "file_uploader", "file_service_manager", "pool_aggregator", "socket_gateway")
DEFAULT_PORTS = {"socket_gateway": 5000, "auth": 5001, "file_uploader": 5002,
                 "file_service_manager": 5003, "pool_aggregator": 5004}
URL_VARS = {"auth": "AUTH_URL", "file_uploader": "FILE_UPLOADER_URL",
            "file_service_manager": "FILE_SERVICE_MANAGER_URL", "pool_aggregator": "POOL_AGGREGATOR_URL",
            "socket_gateway": "GATEWAY_URL"}


def service_env(base: Mapping[str, str], ports: Mapping[str, int]) -> dict[str, str]:
    """The environment every service process gets: URLs of each other, ports, shared settings."""
    env = dict(base)
    for name, port in ports.items():
        env.setdefault(f"{name.upper()}_PORT", str(port))
        env.setdefault(URL_VARS[name], f"http://127.0.0.1:{port}")
    env.setdefault("PUBLIC_FILE_URL", env["FILE_SERVICE_MANAGER_URL"])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Fleet:
    """The five services as child processes."""

    def __init__(self, env: Mapping[str, str], ports: Mapping[str, int] | None = None,
                 log_dir: Path | None = None, echo: bool = False, python: str = sys.executable) -> None:
        self.ports = dict(ports or DEFAULT_PORTS)
        self.env = service_env(env, self.ports)
        self.log_dir = log_dir or ROOT / ".run" / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self.python = python
        self.procs: dict[str, subprocess.Popen] = {}
        self._pumps: list[threading.Thread] = []

    @property
    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        width = max(len(s) for s in SERVICES)  # instance names may be longer; they just push the bar
        with open(self.log_dir / f"{name}.log", "ab") as log_file:
            for line in iter(proc.stdout.readline, b""):
                log_file.write(line)
                log_file.flush()
                if self.echo:
                    sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
                    sys.stdout.flush()

    def start_service(self, name: str, extra_env: Mapping[str, str] | None = None,
                      instance: str | None = None, port: int | None = None) -> subprocess.Popen:
        """Start ``python -m services.<name>``; ``instance`` names a second process of the
        same service (e.g. another gateway) listening on ``port``."""
        key = instance or name
        env = {**os.environ, **self.env, **(extra_env or {})}
        if port is not None:
            env[f"{name.upper()}_PORT"] = str(port)
            self.ports[key] = port
        proc = subprocess.Popen([self.python, "-m", f"services.{name}"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=infra.die_with_parent)
        self.procs[key] = proc
        pump = threading.Thread(target=self._pump, args=(key, proc), daemon=True)
        pump.start()
        self._pumps.append(pump)
        return proc

    def wait_ready(self, names: tuple[str, ...] | None = None, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names or self.procs)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                proc = self.procs[name]
                if proc.poll() is not None:
                    log_file = self.log_dir / f"{name}.log"
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_file}")
                if _get(f"{self.urls[name]}/ready") == 200:
                    pending.remove(name)
            time.sleep(0.3)
        if pending:
            raise RuntimeError(f"not ready within {timeout:.0f}s: {pending}; logs in {self.log_dir}")

    def start(self, timeout: float = 90.0) -> None:
        # auth first: it applies the schema and creates the admin the others rely on.
        self.start_service("auth")
        self.wait_ready(("auth",), timeout)
        for name in SERVICES[1:]:
            self.start_service(name)
        self.wait_ready(None, timeout)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_service(name)


def _run(args: argparse.Namespace) -> int:
    infra.ensure_all()
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = infra.ensure_postgres_db("dropbox")
    mongo_proc = None
    if not env.get("MONGODB_URI"):
        port = int(env.get("SECANTUS_PORT", "27017"))
        if not infra.port_open("127.0.0.1", port):
            print(f"MONGODB_URI is not set: starting secantusdb on 127.0.0.1:{port} (data in .run/mongo)")
            mongo_proc = infra.start_secantus(port, ROOT / ".run" / "mongo", ROOT / ".run" / "secantus.log")
        env["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}"
    fleet = Fleet(env, echo=True)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        fleet.start(timeout=args.timeout)
        urls = fleet.urls
        print("\nFile Dropbox is running:\n"
              f"  dashboard + Socket.IO   {urls['socket_gateway']}/\n"
              f"  auth                    {urls['auth']}\n"
              f"  file_uploader           {urls['file_uploader']}\n"
              f"  file_service_manager    {urls['file_service_manager']}\n"
              f"  pool_aggregator         {urls['pool_aggregator']}\n"
              f"  admin login             {env.get('ADMIN_USER', 'admin')} / "
              f"{'(ADMIN_PASSWORD)' if env.get('ADMIN_PASSWORD') else 'admin-password'}\n"
              "  try: .venv/bin/python -m client --help\n"
              "Ctrl-C stops the fleet.\n", flush=True)
        while not stopping.is_set():
            for name, proc in fleet.procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the fleet", flush=True)
                    stopping.set()
            stopping.wait(1)
    finally:
        print("stopping the fleet...", flush=True)
        fleet.stop()
        if mongo_proc is not None:
            infra.stop_process(mongo_proc)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.fleet")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start infrastructure and the five services in the foreground")
    run.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
