"""make run REPLICAS=N: the port layout and the HAProxy configuration it generates."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from devtools.fleet import DEFAULT_PORTS, MAX_REPLICAS, ReplicatedFleet, front_ports, haproxy_config, replica_ports


def test_replica_k_listens_on_5k00_to_5k04() -> None:
    assert front_ports() == DEFAULT_PORTS
    assert replica_ports(1) == {name: port + 100 for name, port in DEFAULT_PORTS.items()}
    assert replica_ports(2)["pool_aggregator"] == 5204
    assert replica_ports(3, base=30000)["socket_gateway"] == 30300


def test_the_config_balances_every_service_over_every_replica_with_ready_checks() -> None:
    text = haproxy_config(3, base=5000)
    for name, port in DEFAULT_PORTS.items():
        assert f"bind 127.0.0.1:{port}\n" in text
        backend = text.split(f"backend {name}_replicas\n", 1)[1].split("\nfrontend", 1)[0]
        servers = re.findall(r"server \S+ 127\.0\.0\.1:(\d+) check", backend)
        assert servers == [str(replica_ports(k)[name]) for k in (1, 2, 3)]
        assert "http-check send meth GET uri /ready" in backend
        assert "http-check expect status 200" in backend
        sticky = "cookie dropbox_gw insert" in backend
        assert sticky == (name == "socket_gateway")  # Socket.IO polling needs its own process
    assert "timeout tunnel" in text and "option redispatch" in text


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                    reason="haproxy is not installed (make run REPLICAS=N installs it)")
def test_haproxy_accepts_the_generated_config(tmp_path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(2, base=40000))
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    done = subprocess.run([exe, "-c", "-f", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("replicas", [0, MAX_REPLICAS + 1])
def test_the_replica_count_is_bounded(replicas: int) -> None:
    with pytest.raises(ValueError):
        ReplicatedFleet({}, replicas)
