"""A consumer thread never dies of an unexpected error from its connection: it reconnects.

pika raises more than AMQP and socket errors when a connection is reset under it (ValueError on
a closed socket, AssertionError in its state machine); a consumer that let one escape left its
queue without a consumer until the process restarted (gateways stopped receiving notifications)."""

from __future__ import annotations

import threading

import pytest

from services.common import messaging
from services.common.topology import GATEWAY_QUEUE


class _Connection:
    def __init__(self, fail_with: BaseException | None, connected: threading.Event) -> None:
        self.fail_with, self.connected, self.is_open = fail_with, connected, True

    def process_data_events(self, time_limit: float) -> None:
        self.connected.set()
        if self.fail_with is not None:
            raise self.fail_with
        threading.Event().wait(time_limit)

    def close(self) -> None:
        self.is_open = False


class _Channel:
    def basic_qos(self, prefetch_count: int) -> None: ...

    def basic_consume(self, queue: str, callback) -> None: ...


@pytest.mark.parametrize("error", [ValueError("I/O operation on closed file"), AssertionError("pika state")])
def test_an_unexpected_error_reconnects_instead_of_ending_the_thread(monkeypatch, error) -> None:
    connects: list[_Connection] = []
    second = threading.Event()

    def connect(heartbeat: int) -> _Connection:
        conn = _Connection(error if not connects else None, second if connects else threading.Event())
        connects.append(conn)
        return conn

    consumer = messaging.Consumer("amqp://guest:guest@127.0.0.1:1/%2F", GATEWAY_QUEUE, lambda m: None,
                                  name="survivor")
    monkeypatch.setattr(consumer._nodes, "connect", connect)
    monkeypatch.setattr(messaging, "declare_topology", lambda connection, *a, **k: _Channel())
    thread = consumer.start()
    try:
        assert second.wait(10), "the consumer connected again after the error"
        assert thread.is_alive()
    finally:
        consumer.stop()
        thread.join(5)
    assert len(connects) == 2 and not connects[0].is_open
