"""docs/SCALING.md holds what issue 14 asks of it, and what it points at exists."""

from __future__ import annotations

import importlib.util
import re

from .conftest import ROOT, SERVICES

DOC = (ROOT / "docs/SCALING.md").read_text()


def test_it_covers_every_service_and_the_sizing_lines() -> None:
    for module in SERVICES:
        assert f"| {module} |" in DOC, module
    sizing = DOC.split("## Worked sizing", 1)[1]
    for line in ("sockets", "gateway replicas", "uploads/s", "GB/s", "deliveries/s", "emits/s",
                 "GB/day", "TB/day", "Redis upload cache"):
        assert line in sizing, line
    assert "1,000 pools × 1,000 members" in DOC


def test_the_commands_and_files_it_names_exist() -> None:
    for module in set(re.findall(r"`(?:python -m )?(bench\.[a-z_]+)`", DOC)):
        assert importlib.util.find_spec(module) is not None, module
    for path in set(re.findall(r"`((?:tests|devtools|kubernetes|services|bench)/[\w/.-]+\.(?:py|yaml))`", DOC)):
        assert (ROOT / path).exists(), path
    assert "make run REPLICAS=2" in DOC
