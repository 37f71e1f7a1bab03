"""Offline fixtures for the deployment checks: the repo's compose, env and manifests, parsed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = ROOT / "kubernetes"

# module name (python -m services.<module>) -> the name compose and Kubernetes give it.
# Hyphens: Kubernetes object names (and safe hostnames) cannot hold "_".
SERVICES = {
    "auth": "auth",
    "socket_gateway": "socket-gateway",
    "file_uploader": "file-uploader",
    "file_service_manager": "file-service-manager",
    "pool_aggregator": "pool-aggregator",
}
APP_SECRETS = ("dropbox-secrets", "dropbox-auth-secrets")


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as docker compose reads them (no quoting or interpolation is used)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not KEY=VALUE: {raw!r}"
        assert key not in env, f"{path.name}:{number}: {key} set twice"
        env[key.strip()] = value.strip()
    return env


def load_k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return parse_env_file(ROOT / ".env.example")


@pytest.fixture(scope="session")
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return load_k8s_docs()


@pytest.fixture(scope="session")
def k8s(k8s_docs: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> manifest."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for filename, doc in k8s_docs:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in index, f"{filename}: {key} defined twice"
        index[key] = doc
    return index
