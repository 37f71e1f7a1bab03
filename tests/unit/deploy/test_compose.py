"""docker-compose.yml, read as YAML (no Docker needed): the five services from
one image, the data and logging layer, health-gated start order."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import ROOT, SERVICES

INFRA = {"postgres", "redis", "rabbitmq", "mongodb", "elasticsearch", "logstash", "kibana"}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repo (the rest are stock images)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def test_the_five_services_come_from_one_image(compose: dict) -> None:
    apps = app_services(compose)
    assert set(apps) == set(SERVICES.values())
    assert {svc["build"] for svc in apps.values()} == {"."}
    assert len({svc["image"] for svc in apps.values()}) == 1


@pytest.mark.parametrize("module,name", SERVICES.items())
def test_service_command_env_and_ready_healthcheck(compose: dict, env_example: dict, module: str,
                                                    name: str) -> None:
    svc = compose["services"][name]
    assert svc["command"] == ["python", "-m", f"services.{module}"]
    assert svc["env_file"] == ".env"
    port = int(env_example[f"{module.upper()}_PORT"])
    # The host port is PUBLISH_<MODULE>_PORT, by default the container's own (as `make run`).
    assert svc["ports"] == [f"${{PUBLISH_{module.upper()}_PORT:-{port}}}:{port}"]
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "urllib.request" in test[3] and f"http://127.0.0.1:{port}/ready" in test[3]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]


def test_depends_on_waits_for_health_and_has_no_cycle(compose: dict) -> None:
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        if isinstance(deps, list):  # short form: only for monitoring extras
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if name in SERVICES.values() and dep != "logstash":
                assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
            if "healthcheck" not in services[dep] and cond["condition"] == "service_healthy":
                pytest.fail(f"{name} waits for {dep}'s health, but {dep} has no healthcheck")
        graph[name] = set(deps)

    seen: set[str] = set()
    stack: set[str] = set()

    def visit(node: str) -> None:
        assert node not in stack, f"depends_on cycle through {node}"
        if node in seen:
            return
        stack.add(node)
        for dep in graph[node]:
            visit(dep)
        stack.discard(node)
        seen.add(node)

    for node in graph:
        visit(node)
    # Each service waits for the stores it uses (ARCHITECTURE.md "Who owns what").
    needs = {"auth": {"postgres", "rabbitmq"}, "file-uploader": {"redis", "rabbitmq"},
             "file-service-manager": {"mongodb", "redis", "rabbitmq"},
             "pool-aggregator": {"mongodb", "rabbitmq"}, "socket-gateway": {"redis", "rabbitmq"}}
    for name, stores in needs.items():
        assert stores <= graph[name], name


def test_infrastructure_images_and_versions(compose: dict) -> None:
    services = compose["services"]
    assert INFRA <= set(services)
    assert re.fullmatch(r"postgres:16(\.\d+)?(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", services["redis"]["image"])
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert "${PUBLISH_RABBITMQ_UI_PORT:-15672}:15672" in services["rabbitmq"]["ports"]
    assert services["mongodb"]["image"] == "mongo:7.0"
    elastic = {services[n]["image"].rsplit(":", 1)[1] for n in ("elasticsearch", "logstash", "kibana")}
    assert len(elastic) == 1 and next(iter(elastic)).startswith("8."), "one Elastic 8 version for all three"
    es_env = services["elasticsearch"]["environment"]
    assert es_env["discovery.type"] == "single-node" and es_env["xpack.security.enabled"] == "false"
    for name in INFRA:
        assert "healthcheck" in services[name], name
    for name in ("postgres", "redis", "rabbitmq", "mongodb", "elasticsearch"):
        volumes = services[name]["volumes"]
        named = [v.split(":", 1)[0] for v in volumes]
        assert all(n in compose["volumes"] for n in named), name


def test_credentials_of_infra_match_the_env_example(compose: dict, env_example: dict) -> None:
    pg = compose["services"]["postgres"]["environment"]
    assert env_example["DATABASE_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}")
    rmq = compose["services"]["rabbitmq"]["environment"]
    assert env_example["AMQP_URL"].startswith(
        f"amqp://{rmq['RABBITMQ_DEFAULT_USER']}:{rmq['RABBITMQ_DEFAULT_PASS']}@rabbitmq:5672/")
    assert env_example["MONGODB_URI"] == "mongodb://mongodb:27017"
    assert env_example["REDIS_URL"].startswith("redis://redis:6379/")
    assert env_example["LOGSTASH_HOST"] == "logstash"
    # download_url must be reachable from the user's machine: the fsm's published port.
    fsm_port = env_example["FILE_SERVICE_MANAGER_PORT"]
    assert env_example["PUBLIC_FILE_URL"] == f"http://localhost:{fsm_port}"


def test_logstash_pipeline_is_mounted_and_listens_on_5959(compose: dict, env_example: dict) -> None:
    logstash = compose["services"]["logstash"]
    assert "./deploy/logstash/pipeline/:/usr/share/logstash/pipeline/:ro" in logstash["volumes"]
    pipelines = list((ROOT / "deploy/logstash/pipeline").glob("*.conf"))
    assert pipelines
    conf = "\n".join(p.read_text() for p in pipelines)
    port = env_example["LOGSTASH_PORT"]
    assert re.search(r"udp\s*{[^}]*port\s*=>\s*" + port + r"[^}]*codec\s*=>\s*json", conf, re.S)
    assert re.search(r"tcp\s*{[^}]*port\s*=>\s*" + port + r"[^}]*codec\s*=>\s*json_lines", conf, re.S)
    assert re.search(r"elasticsearch\s*{[^}]*http://elasticsearch:9200", conf, re.S)
    assert f"${{PUBLISH_LOGSTASH_PORT:-{port}}}:{port}/udp" in logstash["ports"]
    # Balanced braces: a cheap guard against a pipeline Logstash would refuse to load.
    stripped = re.sub(r'"[^"]*"|#[^\n]*', "", conf)
    assert stripped.count("{") == stripped.count("}")
