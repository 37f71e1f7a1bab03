"""The local infrastructure the fleet needs, brought up when it is down.

PostgreSQL, Redis and RabbitMQ are installed on this kind of machine and
usually running; ``ensure_*`` starts one that is installed but down, with the
machine's own commands. MongoDB cannot be installed here, so when
``MONGODB_URI`` is unset we run secantusdb (a MongoDB-wire-compatible server
from PyPI) on loopback; the S3 backend's tests likewise run moto's S3 server
(``start_s3``) when ``S3_TEST_ENDPOINT`` is unset.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not open {host}:{port} within {timeout:.0f}s")


# Ports handed out by ``free_port``: below the kernel's ephemeral range (32768-60999 here),
# so an outgoing connection of any process never takes a port between the moment we pick it
# and the moment the child binds it (a port from bind(0) is an ephemeral one and was taken
# that way: "Address already in use" at fleet start). Above 10000 and below 20000: clear of
# ``make run`` (5000-5904) and of ``fleet.free_base_port`` (20000 and up).
FREE_PORTS = range(10000, 20000)


def _first_free() -> int:
    """Where this process starts: pytest-xdist worker gwN at its own eighth of the range (the
    workers of one run never meet), anything else at an offset by pid (another run beside it);
    the bind check in ``free_port`` skips what someone else holds either way."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    share = len(FREE_PORTS) // 8
    if worker.startswith("gw") and worker[2:].isdigit():
        return FREE_PORTS.start + (int(worker[2:]) % 8) * share + (os.getpid() % 50) * 20
    return FREE_PORTS.start + (os.getpid() * 97) % len(FREE_PORTS)


_next_free = [_first_free()]


def free_port() -> int:
    """A loopback port nobody listens on, never the same twice in this process."""
    for _ in range(len(FREE_PORTS)):
        port = _next_free[0]
        _next_free[0] = FREE_PORTS.start + (port + 1 - FREE_PORTS.start) % len(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS}")


def _run(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ensure_postgres() -> None:
    if port_open("127.0.0.1", 5432):
        return
    if Path("/etc/postgresql").exists():
        for version in os.listdir("/etc/postgresql"):
            _run(f"pg_ctlcluster --skip-systemctl-redirect {version} main start")
    wait_port("127.0.0.1", 5432, 60, "PostgreSQL")


def ensure_redis() -> None:
    if port_open("127.0.0.1", 6379):
        return
    if shutil.which("redis-server"):
        _run('redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
             "--dir /var/lib/redis --logfile /var/log/redis/ci.log")
    wait_port("127.0.0.1", 6379, 30, "Redis")


def ensure_rabbitmq() -> None:
    if port_open("127.0.0.1", 5672):
        return
    if shutil.which("rabbitmq-server"):
        _run("rabbitmq-server -detached")
    wait_port("127.0.0.1", 5672, 120, "RabbitMQ")


def ensure_package(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` (apt-get) when it is missing.

    Used for what only some runs need (redis-sentinel for the failover tests, haproxy for
    ``make run REPLICAS=N``); raises with the command to run when it cannot install.
    """
    found = shutil.which(command) or (f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError(f"{command} is missing: install it with `sudo apt-get install -y {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run([apt, "install", "-y", "--no-install-recommends", package], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:  # the package lists may be stale on a fresh machine
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=600)
        done = subprocess.run([apt, "install", "-y", "--no-install-recommends", package], env=env,
                              capture_output=True, text=True, timeout=600)
    found = shutil.which(command) or (f"/usr/sbin/{command}" if Path(f"/usr/sbin/{command}").exists() else None)
    if not found:
        raise RuntimeError(f"apt-get install {package} did not provide {command}: {done.stderr[-500:]}")
    return found


def ensure_all() -> None:
    ensure_postgres()
    ensure_redis()
    ensure_rabbitmq()


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when its starter dies, even by SIGKILL, so a killed
    test run or launcher leaves no servers behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (secantusdb may not)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_secantus(port: int, storage: Path, log_path: Path | None = None) -> subprocess.Popen:
    """Start secantusdb on 127.0.0.1:port and wait until it accepts connections."""
    storage.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("secantusd-py")
    if not exe.exists():
        raise RuntimeError("secantusd-py is not installed: run `make install` (pip install -e '.[dev]')")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
    argv = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)]
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"secantusdb exited with {proc.returncode}; see {log_path}")
        if port_open("127.0.0.1", port):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("secantusdb did not start within 60s")


def start_s3(port: int, log_path: Path | None = None) -> subprocess.Popen:
    """Start an S3-compatible server on 127.0.0.1:port (for the S3 storage backend's tests).

    We run moto's standalone server (``moto[server]`` from PyPI, a dev dependency):
    it is pure Python, installs with pip like secantusdb (this kind of machine cannot
    download a MinIO binary), speaks the S3 REST API boto3 uses (multipart uploads,
    ranged GETs, HEAD, DELETE), keeps everything in memory (nothing to clean up), and
    starts in about a second. Any credentials are accepted; buckets are made by the tests.
    """
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise RuntimeError("moto_server is not installed: run `make install` (pip install -e '.[dev]')")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log_path}")
        if port_open("127.0.0.1", port):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start within 60s")


# --- isolation for tests: a database / vhost of their own ------------------------------------


def create_postgres_db(prefix: str = "dropbox_test") -> str:
    """A fresh empty database; returns its URL."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def ensure_postgres_db(name: str) -> str:
    """The local database ``name``, created when missing (``make run``'s default database)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_postgres_db(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def create_vhost(prefix: str = "dropbox_test") -> str:
    """A fresh RabbitMQ vhost with guest allowed; returns the AMQP URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@127.0.0.1:5672/{name}"


def delete_vhost(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    try:
        _rabbitmqctl("delete_vhost", name)
    except (subprocess.SubprocessError, OSError):
        pass
