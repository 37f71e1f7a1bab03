"""Issue 11's soak, compressed to fit the suite: ``examples.pool_sim --soak`` against a fleet
whose access tokens live 5 seconds, with two gateways behind the same Redis and broker.

Full size (README, "Soak"): 50 members, 200 one-second windows, some members away for more
than 100 windows. Here: 16 members, 45 one-second windows, 2 members away for more than 20
windows, the others dropping off and coming back at random, through either gateway. The
simulator prints the fraction of (member, result) pairs delivered exactly once and
byte-identical; it must be 100%.
"""

from __future__ import annotations

import re

import pytest

from devtools import infra
from examples import pool_sim

pytestmark = pytest.mark.slow


def test_soak_compressed_every_member_gets_every_result_exactly_once(make_fleet, capsys):
    running = make_fleet(ACCESS_TOKEN_TTL_SECONDS="5")
    fleet = running.fleet
    fleet.start_service("socket_gateway", instance="socket_gateway_2", port=infra.free_port())
    fleet.wait_ready(("socket_gateway_2",), timeout=90)
    gateways = [running.gateway, fleet.urls["socket_gateway_2"]]
    assert gateways[0] != gateways[1]

    code = pool_sim.main([
        "--soak", "--gateway", gateways[0], "--gateway", gateways[1],
        "--auth", running.urls["auth"], "--aggregator", running.urls["pool_aggregator"],
        "--admin-user", running.admin[0], "--admin-password", running.admin[1],
        "--members", "16", "--listeners", "3", "--window", "1", "--windows", "45",
        "--uploads-per-window", "1", "--leave-chance", "0.05", "--return-chance", "0.2",
        "--blip-chance", "0.02", "--long-away", "2", "--long-away-windows", "22",
        "--settle", "120", "--seed", "3",
    ])
    out = capsys.readouterr().out
    print(out)
    fraction = re.search(r"delivered exactly once and byte-identical: (\d+)/(\d+) = ([0-9.]+)%", out)
    assert fraction, out
    good, pairs = int(fraction.group(1)), int(fraction.group(2))
    assert pairs >= 16 * 20, out  # a result in most of the 45 windows, for each of 16 members
    assert good == pairs and fraction.group(3) == "100.00", out
    churn = re.search(r"churn: (\d+) drop-offs, (\d+) returns, (\d+) blips; (\d+) member\(s\) came back", out)
    assert churn, out
    assert int(churn.group(1)) >= 3 and int(churn.group(2)) >= 3, out  # there was churn
    assert int(churn.group(4)) == 2, out  # both long-away members were away > 22 windows, and came back
    tokens = re.search(r"access tokens per member: min (\d+)", out)
    assert tokens and int(tokens.group(1)) >= 2, out  # 45+ s on 5-s tokens: renewed by the library
    assert code == 0, out
