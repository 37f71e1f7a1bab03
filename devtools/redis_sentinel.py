"""A local Redis primary, a replica and three Sentinels, for failover tests.

    group = SentinelGroup(tmp_dir).start()
    group.sentinels            # ((host, port), ...) for REDIS_SENTINELS
    group.kill_primary()       # SIGKILL the primary; the sentinels promote the replica
    group.wait_failover()      # until every sentinel names the new primary
    group.stop()

Debian's ``redis-server`` and ``redis-sentinel`` (installed when missing through
``infra.ensure_package``), on free loopback ports, with their configs and data
under ``base_dir`` (a sentinel rewrites its own config file). Fast failure
detection for tests: a primary is down after 1 s without answers. The
machine's own Redis on 6379 is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from .infra import die_with_parent, ensure_package, free_port, port_open

MASTER_NAME = "dropbox"
DOWN_AFTER_MS = 1000  # production manifests use 5000; tests want a failover in seconds
START_TIMEOUT = 30.0


class SentinelGroup:
    def __init__(self, base_dir: Path, master_name: str = MASTER_NAME) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.master_name = master_name
        self.server = ensure_package("redis-server", "redis-server")
        self.sentinel = ensure_package("redis-sentinel", "redis-sentinel")
        self.ports = {"primary": free_port(), "replica": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def sentinels(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", port) for port in self.sentinel_ports)

    @property
    def sentinels_env(self) -> str:
        """The REDIS_SENTINELS value."""
        return ",".join(f"{h}:{p}" for h, p in self.sentinels)

    def _spawn(self, name: str, argv: list[str], port: int) -> None:
        log = open(self.base_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.base_dir,
                                start_new_session=True, preexec_fn=die_with_parent)
        self.procs[name] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.base_dir / name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not open {port}")
            time.sleep(0.1)

    def _redis_argv(self, name: str, port: int, *extra: str) -> list[str]:
        data = self.base_dir / name
        data.mkdir(exist_ok=True)
        return [self.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                "--save", "", "--appendonly", "no", "--protected-mode", "no", *extra]

    def start(self) -> SentinelGroup:
        try:
            primary, replica = self.ports["primary"], self.ports["replica"]
            self._spawn("primary", self._redis_argv("primary", primary), primary)
            self._spawn("replica", self._redis_argv("replica", replica, "--replicaof", "127.0.0.1",
                                                    str(primary)), replica)
            for n, port in enumerate(self.sentinel_ports):
                config = self.base_dir / f"sentinel{n}.conf"
                config.write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.base_dir}\n"
                    f"sentinel monitor {self.master_name} 127.0.0.1 {primary} 2\n"
                    f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {self.master_name} 10000\n"
                    f"sentinel parallel-syncs {self.master_name} 1\n")
                self._spawn(f"sentinel{n}", [self.sentinel, str(config)], port)
            self._wait(lambda: self._replica_in_sync() and self._sentinels_agree(3), "replica and sentinels")
        except Exception:
            self.stop()
            raise
        return self

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

    def _replica_in_sync(self) -> bool:
        try:
            info = self._client(self.ports["replica"]).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self, sentinels_known: int) -> bool:
        """Every sentinel knows the replica and the other sentinels (a failover needs them)."""
        for port in self.sentinel_ports:
            try:
                master = self._client(port).sentinel_master(self.master_name)
            except redis.RedisError:
                return False
            if master.get("num-slaves", 0) < 1 or master.get("num-other-sentinels", 0) < sentinels_known - 1:
                return False
        return True

    def _wait(self, ready, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready within {timeout:.0f}s; logs in {self.base_dir}")
            time.sleep(0.2)

    def primary_port(self, sentinel: int = 0) -> int:
        """The primary's port as one sentinel names it now."""
        host, port = self._client(self.sentinel_ports[sentinel]).sentinel_get_master_addr_by_name(
            self.master_name)
        return int(port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; returns its port."""
        port = self.primary_port()
        name = next(n for n, p in self.ports.items() if p == port)
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return port

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica without losing the primary."""
        self._client(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", self.master_name)

    def wait_failover(self, old_port: int, timeout: float = 60.0) -> int:
        """Until every sentinel names a primary other than ``old_port`` that answers as one, and
        the old primary, if it still runs, has become its replica (until then it still takes
        writes that its demotion will throw away: Sentinel's window, see docs/SCALING.md)."""
        old_alive = any(p == old_port and self.procs[n].poll() is None for n, p in self.ports.items())

        def moved() -> bool:
            try:
                ports = {self.primary_port(n) for n in range(len(self.sentinel_ports))}
                if len(ports) != 1 or old_port in ports:
                    return False
                new = ports.pop()
                if self._client(new).info("replication").get("role") != "master":
                    return False
                if old_alive:
                    info = self._client(old_port).info("replication")
                    return info.get("role") == "slave" and int(info.get("master_port", 0)) == new
            except redis.RedisError:
                return False
            return True

        self._wait(moved, "failover", timeout)
        return self.primary_port()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    proc.kill()
