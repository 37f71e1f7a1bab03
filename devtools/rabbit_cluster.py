"""A local RabbitMQ cluster of three (or more) nodes of the installed server, for tests.

    cluster = RabbitCluster(tmp_dir).start()      # three nodes joined into one cluster
    Broker(cluster.amqp_url("/"))                 # every node's URL, comma-separated
    cluster.stop_node(0, kill=True)               # lose a node (SIGKILL)
    cluster.stop()

Each node is the machine's ``rabbitmq-server`` started in the foreground with a
node name, AMQP port and Erlang distribution port of its own, its data, logs,
config and (empty) plugin list under ``base_dir``, and ``HOME`` = ``base_dir``
so the nodes and the CLI share one Erlang cookie that is not the machine's.
Nodes 2.. join node 1 with ``rabbitmqctl join_cluster``. The machine's own
broker (``rabbit@localhost`` on 5672, its cookie and mnesia) is never touched:
different names, ports, cookie and directories; only epmd is shared, as Erlang
intends.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .infra import die_with_parent, free_port, port_open

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the real server; /usr/sbin's wrapper su's to rabbitmq
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
START_TIMEOUT = 120.0  # a node boots in ~5-15 s; on a busy 2-core machine much longer


@dataclass
class Node:
    name: str
    amqp_port: int
    dist_port: int
    directory: Path
    proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster:
    def __init__(self, base_dir: Path, size: int = 3) -> None:
        if size < 1 or size > 7:  # quorum queues want an odd count of 3-7 nodes
            raise ValueError("a cluster has 1 to 7 nodes")
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(3)
        self.nodes = [Node(f"dropbox-test-{tag}-{i}@localhost", free_port(), free_port(),
                           self.base_dir / f"node{i}") for i in range(size)]
        cookie = self.base_dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)

    # --- environment and CLI ------------------------------------------------------------

    def _env(self, node: Node) -> dict[str, str]:
        d = node.directory
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.base_dir),  # .erlang.cookie of this cluster only
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # not /etc/rabbitmq's (rabbit@localhost)
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def ctl(self, node: Node, *args: str, timeout: float = 90.0) -> str:
        out = subprocess.run([CTL, "-q", "-n", node.name, *args], env=self._env(node), capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {out.stderr.strip()[-500:]}")
        return out.stdout

    # --- lifecycle ---------------------------------------------------------------------------

    def start_node(self, index: int, *, timeout: float = START_TIMEOUT) -> None:
        node = self.nodes[index]
        if node.running:
            return
        d = node.directory
        for sub in ("mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}\n"
            "loopback_users.guest = true\n"
            "disk_free_limit.absolute = 50MB\n")
        (d / "enabled_plugins").write_text("[].\n")  # no management/prometheus listeners to collide
        (d / "rabbitmq-env.conf").write_text("")
        log = open(d / "server.out", "ab")  # noqa: SIM115 - lives as long as the node
        node.proc = subprocess.Popen([SERVER], env=self._env(node), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=d, start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}; see {d / 'server.out'}")
            if port_open("127.0.0.1", node.amqp_port):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{node.name} did not open {node.amqp_port} within {timeout:.0f}s")

    def start(self) -> RabbitCluster:
        try:
            self.start_node(0)
            for index in range(1, len(self.nodes)):
                self.start_node(index)
                node = self.nodes[index]
                self.ctl(node, "stop_app")
                self.ctl(node, "join_cluster", self.nodes[0].name)
                self.ctl(node, "start_app")
                self.ctl(node, "await_startup")
            self.wait_members(len(self.nodes))
        except Exception:
            self.stop()
            raise
        return self

    def running_members(self, via: int | None = None) -> list[str]:
        node = self.nodes[via] if via is not None else next(n for n in self.nodes if n.running)
        out = self.ctl(node, "eval", "rabbit_nodes:all_running().")
        return sorted(part.strip().strip("'") for part in out.strip().strip("[]").split(",") if part.strip())

    def wait_members(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            members = self.running_members()
            if len(members) == count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster has {members}, expected {count} running nodes")
            time.sleep(1)

    def stop_node(self, index: int, *, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop one node: politely (SIGTERM, the node leaves as in a rolling restart) or,
        with ``kill``, SIGKILL as a crashed machine would."""
        node = self.nodes[index]
        if not node.running or node.proc is None:
            return
        try:
            os.killpg(node.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)

    def stop(self) -> None:
        for index in reversed(range(len(self.nodes))):
            self.stop_node(index, timeout=30)

    # --- what clients use ---------------------------------------------------------------------

    def amqp_url(self, vhost: str = "%2F") -> str:
        """Every node's AMQP URL, comma-separated: what ``AMQP_URL`` holds for a cluster."""
        vhost = "%2F" if vhost == "/" else vhost
        return ",".join(f"amqp://guest:guest@127.0.0.1:{n.amqp_port}/{vhost}" for n in self.nodes)
