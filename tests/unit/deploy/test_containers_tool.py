"""devtools.containers and docker-compose.local.yml, offline: the pieces that decide what a
build sees (mirror, pip secrets) and that the local override names only images we build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import containers

from .conftest import ROOT, SERVICES


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.local.yml").read_text())


def test_mirror_is_read_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n")
    assert containers.debian_mirror([deb822]) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb http://other.example/debian-security bookworm-security main\n"
                        "deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert containers.debian_mirror([one_line]) == "http://other.example/debian"
    assert containers.debian_mirror([tmp_path / "absent"]) == "http://deb.debian.org/debian"


def test_pip_secret_keeps_network_indexes_and_the_ca_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(containers, "_pip_config", lambda: {
        "index-url": "https://proxy.example/simple", "extra-index-url": "file:///opt/pypi/simple https://x.example/s",
        "find-links": "/opt/wheels", "cert": str(ca), "timeout": "180"})
    options = containers.build_secrets(tmp_path)
    assert options == ["--secret", f"id=pipconf,src={tmp_path / 'pip.conf'}", "--secret", f"id=cacert,src={ca}"]
    conf = (tmp_path / "pip.conf").read_text()
    assert "index-url = https://proxy.example/simple" in conf
    assert "extra-index-url = https://x.example/s\n" in conf  # a build cannot see the host's file:// index
    assert "file://" not in conf and "/opt/wheels" not in conf
    assert (tmp_path / "pip.conf").stat().st_mode & 0o077 == 0


def test_local_override_uses_only_images_make_images_builds(compose: dict, local: dict) -> None:
    built = {containers.IMAGE, *containers.STANDINS.values()}
    for name, svc in local["services"].items():
        assert name in compose["services"], f"override of unknown service {name}"
        if "image" in svc:
            assert svc["image"] in built, (name, svc["image"])
    # Every service with an image that cannot be pulled here is replaced or not started.
    for name, svc in compose["services"].items():
        if "build" in svc or "monitoring" in svc.get("profiles", []):
            continue
        override = local["services"].get(name, {})
        assert "image" in override or override.get("profiles"), f"{name} would be pulled"


def test_local_override_points_clients_at_the_published_ports(compose: dict, local: dict) -> None:
    for module, name in SERVICES.items():
        env = local["services"][name]["environment"]
        fsm = compose["services"]["file-service-manager"]["ports"][0].split(":-")[0]  # "${PUBLISH_..._PORT"
        assert env["PUBLIC_FILE_URL"].startswith(f"http://localhost:{fsm}:-"), env["PUBLIC_FILE_URL"]
        own = compose["services"][name]["ports"][0].split(":-")[0]
        if module != "socket_gateway":
            assert env[f"PUBLIC_{module.upper()}_URL"].startswith(f"http://localhost:{own}:-")
        assert containers.publish_var(module) in own


def test_python_pid_one_stand_ins_run_under_an_init(local: dict) -> None:
    # Python as PID 1 ignores SIGTERM: without an init every stop waits the whole grace period.
    for name, svc in local["services"].items():
        command = svc.get("command", [])
        if command[:1] == ["python"] or "secantus" in svc.get("image", ""):
            assert svc.get("init") is True, name


def test_make_targets_run_the_tool() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target, prereqs, command in (("images", "install containers", "images"),
                                     ("compose-up", "install containers", "up"),
                                     ("compose-down", "install", "down")):
        assert f"{target}: {prereqs}\n\t$(BIN)/python -m devtools.containers {command}\n" in makefile
    # A fresh machine has no engine, docker-compose or debootstrap: make test installs them first.
    assert "test: install browser containers\n" in makefile
    assert "containers:\n\t@bash devtools/ensure_containers.sh\n" in makefile
