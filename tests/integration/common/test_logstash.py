"""Logs reach Logstash through python-logstash: a local UDP listener receives them."""

from __future__ import annotations

import json
import logging
import socket

from services.common import logs


def test_events_reach_a_udp_logstash_listener_with_their_fields():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    try:
        logs.configure("pool_aggregator", "INFO", logstash_host="127.0.0.1", logstash_port=port)
        with logs.bound(pool_id="p9", request_id="req-1"):
            logging.getLogger("test").warning("group ready", extra={"group_id": "p9-100", "token": "secret-tok"})
        event = json.loads(listener.recv(65535))
    finally:
        listener.close()
        logs.configure("pool_aggregator", "INFO")
    assert event["message"] == "group ready"
    assert event["level"] == "WARNING"
    assert event["service"] == "pool_aggregator"
    assert event["pool_id"] == "p9" and event["request_id"] == "req-1" and event["group_id"] == "p9-100"
    assert event.get("token") == "[redacted]"
    assert "@timestamp" in event
