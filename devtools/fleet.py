"""Run the whole fleet as local processes: ``make run`` and the end-to-end tests.

    python -m devtools.fleet run          # foreground; Ctrl-C or SIGTERM stops everything
    python -m devtools.fleet run --replicas 2   # make run REPLICAS=2

Each service starts exactly as in docker-compose and Kubernetes,
``python -m services.<name>``, with its environment. Output lines are prefixed
with the service name (and kept in ``.run/logs/<name>.log``). The fleet is
ready when every service answers ``GET /ready`` with 200.

With ``--replicas N`` (``ReplicatedFleet``) every service runs N processes:
replica k of a service listens on base + 100*k + its offset (5100-5104,
5200-5204, ... for the default base 5000), and HAProxy (Debian's package,
installed by ``infra.ensure_package`` when missing; config generated into
``.run/haproxy.cfg``) listens on the usual 5000-5004, checks every replica's
``/ready`` each second and sends requests only to ready ones. The services
reach each other through the balancer too, so losing one replica of anything
costs at most a retried connection.
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
OFFSETS = {name: port - 5000 for name, port in DEFAULT_PORTS.items()}
MAX_REPLICAS = 9  # replica k uses base+100k..: 9 keeps 5000-5904 below the next thousand
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

    def remove_service(self, name: str) -> None:
        """Stop an extra instance and forget it: ``urls`` (which later tests of a shared fleet
        walk, e.g. for every service's /metrics) no longer lists it."""
        self.stop_service(name)
        self.procs.pop(name, None)
        self.ports.pop(name, None)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_service(name)


def front_ports(base: int = 5000) -> dict[str, int]:
    """Where clients and the other services reach each service (the balancer's ports)."""
    return {name: base + offset for name, offset in OFFSETS.items()}


def replica_ports(replica: int, base: int = 5000) -> dict[str, int]:
    """Replica ``replica`` (1..N) of each service: base + 100*replica + offset (5100-5104, ...)."""
    return {name: base + 100 * replica + offset for name, offset in OFFSETS.items()}


def free_base_port(replicas: int, start: int = 20000, stop: int = 32000) -> int:
    """A base whose front and replica ports are all free (tests run beside ``make run``).

    Below the kernel's ephemeral range (32768-60999), as ``infra.free_port``: an outgoing
    connection never takes one of these ports between the check and the bind."""
    for base in range(start, stop, 1000):
        ports = list(front_ports(base).values())
        for k in range(1, replicas + 1):
            ports += replica_ports(k, base).values()
        if not any(infra.port_open("127.0.0.1", port, timeout=0.1) for port in ports):
            return base
    raise RuntimeError("no free block of ports for the replicas")


def haproxy_config(replicas: int, base: int = 5000) -> str:
    """HAProxy in front of N replicas of each service.

    - Health: ``GET /ready`` every second; a replica is out after 2 failures, back after 1 pass.
    - A connection refused by a replica that just died is retried on another (``redispatch``),
      so a SIGKILL costs a client nothing but a few milliseconds.
    - The gateway takes WebSocket only (one TCP connection per session, so any replica will
      do); it is still sticky by a cookie HAProxy inserts (``dropbox_gw``), so a client that
      reconnects lands where its last session was. WebSocket upgrades pass through, and
      ``timeout tunnel`` keeps an idle socket open (the Socket.IO ping every 25 s keeps it busy).
    """
    lines = [
        "# Generated by devtools/fleet.py (make run REPLICAS=N); edits are overwritten.",
        "global",
        "    maxconn 4000  # bound on concurrent connections (2 fds each; fits a 20000-fd ulimit)",
        "defaults",
        "    mode http",
        "    option forwardfor",
        "    option redispatch",
        "    retries 3",
        "    timeout connect 2s",
        "    timeout client 120s",
        "    timeout server 120s  # the longest request: a 50 MB download on a slow link",
        "    timeout tunnel 1h    # an upgraded WebSocket",
        "    timeout http-request 30s",
        "    default-server inter 1s fall 2 rise 1",
    ]
    for name in DEFAULT_PORTS:
        front = front_ports(base)[name]
        lines += ["", f"frontend {name}", f"    bind 127.0.0.1:{front}", f"    default_backend {name}_replicas",
                  "", f"backend {name}_replicas"]
        if name == "socket_gateway":
            lines += ["    balance source",
                      "    cookie dropbox_gw insert indirect nocache httponly"]
        else:
            lines += ["    balance leastconn"]
        lines += ["    option httpchk", "    http-check send meth GET uri /ready", "    http-check expect status 200"]
        for k in range(1, replicas + 1):
            port = replica_ports(k, base)[name]
            cookie = f" cookie r{k}" if name == "socket_gateway" else ""
            lines.append(f"    server {name}-{k} 127.0.0.1:{port} check{cookie}")
    return "\n".join(lines) + "\n"


class ReplicatedFleet(Fleet):
    """N processes of every service behind HAProxy (``make run REPLICAS=N``)."""

    def __init__(self, env: Mapping[str, str], replicas: int, base: int = 5000, log_dir: Path | None = None,
                 run_dir: Path | None = None, echo: bool = False, python: str = sys.executable) -> None:
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1..{MAX_REPLICAS}")
        front = front_ports(base)
        gateway = front["socket_gateway"]
        # Browsers and clients reach the gateway through the balancer: that is the origin every
        # replica must accept (each replica's own default would be its replica port).
        env = {"CORS_ORIGINS": f"http://127.0.0.1:{gateway},http://localhost:{gateway}", **env}
        super().__init__(env, ports=front, log_dir=log_dir, echo=echo, python=python)
        self.replicas = replicas
        self.base = base
        self.front = front_ports(base)
        self.run_dir = run_dir or ROOT / ".run"
        self.haproxy: subprocess.Popen | None = None

    def instances(self, name: str) -> list[str]:
        return [f"{name}-{k}" for k in range(1, self.replicas + 1)]

    def start_balancer(self) -> None:
        exe = infra.ensure_package("haproxy", "haproxy")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "haproxy.cfg"
        config.write_text(haproxy_config(self.replicas, self.base))
        check = subprocess.run([exe, "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused {config}: {check.stdout}{check.stderr}")
        log = open(self.log_dir / "haproxy.log", "ab")  # noqa: SIM115 - lives as long as the child
        self.haproxy = subprocess.Popen([exe, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=infra.die_with_parent)
        deadline = time.monotonic() + 15
        for name, port in self.front.items():
            while not infra.port_open("127.0.0.1", port):
                if self.haproxy.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"haproxy does not listen for {name} on {port}; see "
                                       f"{self.log_dir / 'haproxy.log'}")
                time.sleep(0.1)

    def start(self, timeout: float = 120.0) -> None:
        self.start_balancer()
        # auth replica 1 first: it applies the schema and creates the admin; then the rest.
        first = "auth-1"
        self.start_service("auth", instance=first, port=replica_ports(1, self.base)["auth"])
        self.wait_ready((first,), timeout)
        for k in range(1, self.replicas + 1):
            for name in SERVICES:
                if (name, k) != ("auth", 1):
                    self.start_service(name, instance=f"{name}-{k}", port=replica_ports(k, self.base)[name])
        self.wait_ready(tuple(p for p in self.procs), timeout)
        # The balancer marks a replica up one check (1 s) after it is ready.
        deadline = time.monotonic() + 15
        while any(_get(f"http://127.0.0.1:{port}/ready") != 200 for port in self.front.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the balancer does not serve every service; see haproxy.log")
            time.sleep(0.3)

    def stop(self) -> None:
        super().stop()
        if self.haproxy is not None:
            infra.stop_process(self.haproxy)


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
    fleet: Fleet = ReplicatedFleet(env, args.replicas, echo=True) if args.replicas else Fleet(env, echo=True)
    stopping = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        fleet.start(timeout=args.timeout)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in DEFAULT_PORTS.items()}
        if args.replicas:
            print(f"\n{args.replicas} replicas of each service (replica k on 5k00-5k04) behind HAProxy "
                  f"(.run/haproxy.cfg; logs .run/logs/<service>-<k>.log):", flush=True)
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
        reported: set[str] = set()
        while not stopping.is_set():
            for name, proc in fleet.procs.items():
                if proc.poll() is None or name in reported:
                    continue
                reported.add(name)
                service = name.rsplit("-", 1)[0] if isinstance(fleet, ReplicatedFleet) else name
                survivors = [n for n in fleet.procs if n.rsplit("-", 1)[0] == service and fleet.procs[n].poll() is None]
                if isinstance(fleet, ReplicatedFleet) and survivors:
                    # With replicas the balancer routes around it: say so and keep running.
                    print(f"{name} exited with {proc.returncode}; {len(survivors)} replica(s) of {service} "
                          "still serve", flush=True)
                    continue
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
    run.add_argument("--replicas", type=int, default=0,
                     help=f"run N (1..{MAX_REPLICAS}) processes of each service behind HAProxy on 5000-5004")
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
