"""A service stopped with SIGTERM (docker stop, Kubernetes, devtools.fleet) publishes the audit
records still buffered (issue 13): ``runtime.serve`` turns SIGTERM into the same orderly stop as
Ctrl-C, and that stop flushes the trail last."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pika
import pytest

from services.common.contracts import AuditRecorded, AuditsRecorded, decode
from services.common.topology import AUDIT_QUEUE

# A process shaped like every service's __main__: runtime.start, records (buffered: the linger is
# an hour, so only the stop can send them), then runtime.serve until signalled.
SERVICE = textwrap.dedent("""
    import sys
    from flask import Flask
    from services.common import messaging, runtime
    from services.common.audit import AuditTrail

    url = sys.argv[1]
    broker = messaging.Broker(url)
    trail = AuditTrail(broker, "stopping_service", linger=3600)
    app = Flask("stopping_service")
    app.extensions["runtime"] = runtime.Runtime(audit=trail)
    stop = runtime.start(app, url)
    for n in range(3):
        trail.record("downloaded", actor="7", file_id=f"f{n}")
    print("buffered", trail.buffered, flush=True)
    runtime.serve(app, "127.0.0.1", 0, stop)
""")


def audit_records(amqp_url: str, timeout: float = 10.0) -> list[AuditRecorded]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    found: list[AuditRecorded] = []
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _props, body = channel.basic_get(AUDIT_QUEUE.name, auto_ack=True)
            if method is None:
                if found:
                    break
                time.sleep(0.05)
                continue
            message = decode(body)
            found.extend(message.records if isinstance(message, AuditsRecorded) else [message])  # type: ignore[list-item]
    finally:
        connection.close()
    return found


def _stopped_with_sigterm(script: str, amqp_url: str, settle: float) -> list[AuditRecorded]:
    """Run ``script`` until it has buffered its records, SIGTERM it ``settle`` seconds later; it must
    exit 0. The audit records it published."""
    proc = subprocess.Popen([sys.executable, "-c", script, amqp_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the records are buffered (or the process died)
        assert line.strip() == "buffered 3", (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(settle)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return audit_records(amqp_url)


def test_sigterm_publishes_what_the_trail_buffered(amqp_url: str) -> None:
    records = _stopped_with_sigterm(SERVICE, amqp_url, 0.3)  # into waitress's loop, where a real SIGTERM arrives
    assert [(r.service, r.file_id) for r in records] == [("stopping_service", f"f{n}") for n in range(3)]

# The same, with SIGTERM arriving before serve: between runtime.start and runtime.serve (a
# process told to stop while it starts). Before, the default action killed it with its buffer.
EARLY_STOP = SERVICE.replace('print("buffered", trail.buffered, flush=True)',
                             'print("buffered", trail.buffered, flush=True)\nimport time\ntime.sleep(30)')

# socket_gateway: eventlet, its own SIGTERM handler (server.stop_on_sigterm), runtime.start
# without one. The records of the last ~50 ms (result_delivered) are published on the way out.
GATEWAY = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import sys
    from flask import Flask
    from services.common import messaging, runtime
    from services.common.audit import AuditTrail
    from services.socket_gateway import server
    from services.socket_gateway.config import Settings

    url = sys.argv[1]
    broker = messaging.Broker(url)
    trail = AuditTrail(broker, "stopping_service", linger=3600)
    app = Flask("stopping_service")
    app.extensions["runtime"] = runtime.Runtime(audit=trail)
    stop = runtime.start(app, url, sigterm=False)
    for n in range(3):
        trail.record("downloaded", actor="7", file_id=f"f{n}")
    print("buffered", trail.buffered, flush=True)
    server.serve(app, Settings.from_env({"PORT": "0", "AMQP_URL": url}), stop)
""")


@pytest.mark.parametrize("script", [EARLY_STOP, GATEWAY], ids=["before_serve", "socket_gateway"])
def test_sigterm_publishes_what_the_trail_buffered_also(amqp_url: str, script: str) -> None:
    records = _stopped_with_sigterm(script, amqp_url, 1.0)  # past startup, into the sleep or eventlet's loop
    assert [(r.service, r.file_id) for r in records] == [("stopping_service", f"f{n}") for n in range(3)]
