"""devtools.infra.free_port: the ports the test fleets listen on.

A port from bind(0) is an ephemeral one, which any outgoing connection may take
between the pick and the child's bind ("Address already in use" at fleet start
in a full run); ``free_port`` hands out ports below that range instead.
"""

from __future__ import annotations

import socket
from pathlib import Path

from devtools import infra


def _ephemeral_range() -> range:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_ports_are_outside_the_ephemeral_range_and_never_repeat():
    ports = [infra.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p in infra.FREE_PORTS for p in ports)
    assert not set(ports) & set(_ephemeral_range())


def test_a_port_someone_listens_on_is_skipped():
    port = infra.free_port()
    saved = infra._next_free[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        infra._next_free[0] = port  # the allocator's next pick is the taken port
        try:
            assert infra.free_port() != port
        finally:
            infra._next_free[0] = saved
