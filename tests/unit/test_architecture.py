"""The house rules that code review would otherwise have to remember."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "socket_gateway", "file_uploader", "file_service_manager", "pool_aggregator")


def _python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_import_linter_contracts_hold():
    """No service imports another; services.common imports no service (pyproject's contracts)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_types_check():
    """mypy: normal on the services, strict on services/common (pyproject's [tool.mypy]); in CI through here."""
    mypy = Path(sys.executable).with_name("mypy")
    result = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "services", "client", "devtools", "examples", "bench", "tests"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:]


def test_pika_is_imported_in_one_module_only():
    users = sorted(str(p.relative_to(ROOT)) for p in _python_files("services", "client", "examples", "devtools")
                   if any(name == "pika" or name.startswith("pika.") for name in _imports(p)))
    assert users == ["services/common/messaging.py"], users


# Services that consume messages have handlers.py; auth consumes none.
CONSUMERS = {"socket_gateway", "file_uploader", "file_service_manager", "pool_aggregator"}
MAX_CREATE_APP_LINES = 45  # create_app only wires: longer means logic crept in
MAX_MAIN_LINES = 12  # __main__.main: settings -> logs -> create_app -> runtime.start -> serve


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_house_shape(service):
    package = ROOT / "services" / service
    for part in ("__init__.py", "__main__.py", "config.py", "app.py", "deps.py", "routes.py", "ports.py",
                 "core.py", "store.py"):
        assert (package / part).exists(), f"services/{service}/{part} is missing"
    assert (package / "handlers.py").exists() == (service in CONSUMERS), f"services/{service}/handlers.py"
    functions = {n.name: n for n in ast.walk(ast.parse((package / "app.py").read_text()))
                 if isinstance(n, ast.FunctionDef)}
    create_app = functions["create_app"]
    assert create_app.end_lineno - create_app.lineno < MAX_CREATE_APP_LINES, f"{service}: create_app only wires"
    main = next(n for n in ast.walk(ast.parse((package / "__main__.py").read_text()))
                if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno < MAX_MAIN_LINES, f"{service}: __main__.main is the five-line start"
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert doc and len(doc) > 40, f"services/{service}/__init__.py must say what it consumes, publishes, owns"


def test_architecture_lists_every_service_module():
    """docs/ARCHITECTURE.md's module table is generated from the code (python -m devtools.shape)."""
    from devtools import shape

    assert shape.main(["--check"]) == 0, "run: python -m devtools.shape"


@pytest.mark.parametrize("service", SERVICES)
def test_core_modules_do_no_io(service):
    forbidden = {"redis", "pymongo", "gridfs", "psycopg2", "requests", "flask", "socketio", "eventlet",
                 "services.common.messaging", "services.common.mongo"}
    core = ROOT / "services" / service / "core.py"
    bad = {name for name in _imports(core) if name in forbidden or name.split(".")[0] in forbidden}
    assert not bad, f"{core.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_refuses_default_secrets_in_production(service):
    """Each ``__main__`` reads the environment once and stops with exit 2 and a clear message."""
    env = {"PATH": "/usr/bin:/bin", "DROPBOX_ENV": "production", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"{service}: configuration error:" in result.stderr
    assert "DROPBOX_ENV=production" in result.stderr
