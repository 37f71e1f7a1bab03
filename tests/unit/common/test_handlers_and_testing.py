"""The handler-table machinery and the in-memory broker that fast tests rely on."""

from __future__ import annotations

import pytest

from services.common.contracts import FileGrouped, MembershipChanged, TokenRevoked
from services.common.handlers import ConsumerSpec, UnhandledMessage
from services.common.messaging import PublishError
from services.common.testing import FakeAuth, FakeClock, InMemoryBroker
from services.common.topology import CONTROL_BINDINGS, INDEX_QUEUE, STORE_QUEUE, queues_for, topic_matches


@pytest.mark.parametrize(("pattern", "key", "expected"), [
    ("file.status.*", "file.status.cached", True),
    ("file.status.*", "file.status", False),
    ("file.status.*", "file.status.a.b", False),
    ("#", "anything.at.all", True),
    ("a.#", "a", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("upload.store", "upload.store_failed", False),
])
def test_topic_matching_follows_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_queues_for_uses_the_real_bindings() -> None:
    assert STORE_QUEUE in queues_for(STORE_QUEUE.exchange, "upload.store")
    assert INDEX_QUEUE in queues_for(INDEX_QUEUE.exchange, "file.grouped")
    assert STORE_QUEUE not in queues_for(STORE_QUEUE.exchange, "file.grouped")


def test_dispatch_calls_the_one_handler_and_refuses_others() -> None:
    seen: list[object] = []
    spec = ConsumerSpec("control", None, {TokenRevoked: seen.append}, bindings=CONTROL_BINDINGS)
    spec.dispatch(TokenRevoked(token_id="t", user_id="u"))
    assert seen == [TokenRevoked(token_id="t", user_id="u")]
    with pytest.raises(UnhandledMessage):
        spec.dispatch(MembershipChanged(pool_id="p", user_id="u", user_name="n", role=None))


def test_in_memory_broker_routes_by_topology_and_delays_retries() -> None:
    broker = InMemoryBroker()
    grouped: list[FileGrouped] = []
    spec = ConsumerSpec("index", INDEX_QUEUE, {FileGrouped: grouped.append})
    now = FileGrouped(file_id="f1", pool_id="p", group_id="g", late=False)
    later = FileGrouped(file_id="f2", pool_id="p", group_id="g", late=True)
    broker.publish(now)
    broker.publish_delayed(later, 5)
    broker.publish(TokenRevoked(token_id="t", user_id="u"))  # no spec consumes it: dropped from pending
    assert broker.routed_to(INDEX_QUEUE) == [now]
    assert broker.deliver([spec]) == 1 and grouped == [now]
    assert [p.delay_seconds for p in broker.delayed()] == [5]
    assert broker.deliver([spec], include_delayed=True) == 1 and grouped == [now, later]
    assert broker.of_type(TokenRevoked) == [TokenRevoked(token_id="t", user_id="u")]


def test_in_memory_broker_can_refuse_publishes() -> None:
    broker = InMemoryBroker()
    broker.fail_publishes(1)
    with pytest.raises(PublishError):
        broker.publish(TokenRevoked(token_id="t", user_id="u"))
    broker.publish(TokenRevoked(token_id="t", user_id="u"))
    assert len(broker.published) == 1


def test_fake_clock_and_auth() -> None:
    clock = FakeClock()
    start = clock.time()
    clock.advance(90)
    assert clock.time() - start == 90
    auth = FakeAuth()
    who = auth.add_user("tok", "u1", "alice", pools={"p1": "contributor"})
    assert auth.validate("tok") == who and auth.validate("nope") is None
    assert who.can_contribute("p1")
    auth.down = True
    from services.common.authclient import AuthUnavailable
    with pytest.raises(AuthUnavailable):
        auth.validate("tok")
