"""The data layer as a cluster, checked offline: RabbitMQ (3 nodes, quorum queues), MongoDB
(a 3-member replica set), Redis (primary, 2 replicas, 3 Sentinels); and every workload of 2 or
more replicas spread over machines (anti-affinity) and kept through drains (a PDB)."""

from __future__ import annotations

import copy
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from services.common.settings import CommonSettings, broker_urls, sentinel_addresses

DOMAIN = "file-dropbox.svc.cluster.local"


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _secrets(k8s: dict) -> dict[str, str]:
    return {**k8s[("Secret", "dropbox-secrets")]["stringData"], **k8s[("Secret", "dropbox-data-secrets")]["stringData"]}


def test_rabbitmq_is_a_three_node_cluster_the_clients_know_every_node_of(k8s: dict) -> None:
    sts = k8s[("StatefulSet", "rabbitmq")]
    replicas = sts["spec"]["replicas"]
    assert replicas == 3
    config = k8s[("ConfigMap", "rabbitmq-config")]["data"]["10-cluster.conf"]
    assert "cluster_formation.peer_discovery_backend = classic_config" in config
    peers = re.findall(r"classic_config\.nodes\.\d+ = (\S+)", config)
    assert peers == [f"rabbit@rabbitmq-{k}.rabbitmq.{DOMAIN}" for k in range(replicas)]
    assert f"quorum_queue.initial_cluster_size = {replicas}" in config
    assert "cluster_partition_handling = pause_minority" in config
    env = _env(_pod(sts)["containers"][0])
    assert env["RABBITMQ_NODENAME"]["value"] == f"rabbit@$(POD_NAME).rabbitmq.{DOMAIN}"
    assert env["RABBITMQ_USE_LONGNAME"]["value"] == "true"
    cookie = env["RABBITMQ_ERLANG_COOKIE"]["valueFrom"]["secretKeyRef"]
    assert cookie["key"] in k8s[("Secret", cookie["name"])]["stringData"]
    service = k8s[("Service", "rabbitmq")]["spec"]
    assert service["publishNotReadyAddresses"] is True
    assert {p["port"] for p in service["ports"]} >= {5672, 4369, 25672}
    urls = broker_urls(_secrets(k8s)["AMQP_URL"])
    assert [urlparse(u).hostname for u in urls] == [f"rabbitmq-{k}.rabbitmq" for k in range(replicas)]


def test_mongodb_is_a_replica_set_written_with_majority_and_retryable_writes(k8s: dict) -> None:
    sts = k8s[("StatefulSet", "mongodb")]
    replicas = sts["spec"]["replicas"]
    assert replicas == 3
    args = _pod(sts)["containers"][0]["args"]
    replset = args[args.index("--replSet") + 1]
    script = _pod(k8s[("Job", "mongodb-init-replica-set")])["containers"][0]["command"][-1]
    assert f'_id: "{replset}"' in script
    members = re.findall(r'host: "([^"]+)"', script)
    assert members == [f"mongodb-{k}.mongodb:27017" for k in range(replicas)]
    uri = urlparse(_secrets(k8s)["MONGODB_URI"])
    assert uri.netloc.split(",") == members
    options = {k: v[0] for k, v in parse_qs(uri.query).items()}
    assert options["replicaSet"] == replset
    assert options["retryWrites"] == "true" and options["w"] == "majority"


def test_redis_has_a_primary_two_replicas_and_three_sentinels_the_services_ask(k8s: dict) -> None:
    assert k8s[("StatefulSet", "redis")]["spec"]["replicas"] == 3
    sentinels = k8s[("StatefulSet", "redis-sentinel")]["spec"]["replicas"]
    assert sentinels == 3
    scripts = k8s[("ConfigMap", "redis-scripts")]["data"]
    config = k8s[("ConfigMap", "dropbox-config")]["data"]
    common = CommonSettings.from_env({**config, "DROPBOX_ENV": "development"})  # secrets aside
    name = common.redis_master_name
    monitor = re.search(r"sentinel monitor (\S+) \$MASTER 6379 (\d+)", scripts["start-sentinel.sh"])
    assert monitor is not None and monitor.group(1) == name
    assert int(monitor.group(2)) == sentinels // 2 + 1  # a majority must agree on a failover
    assert f"get-master-addr-by-name {name}" in scripts["start-redis.sh"]
    assert common.redis_sentinels == sentinel_addresses(config["REDIS_SENTINELS"])
    assert common.redis_sentinels == tuple((f"redis-sentinel-{k}.redis-sentinel", 26379) for k in range(sentinels))
    container = _pod(k8s[("StatefulSet", "redis")])["containers"][0]
    args = container["args"]
    assert args[args.index("--min-replicas-to-write") + 1] == "1"  # bounds the failover loss window
    mounted = {m["name"] for m in container["volumeMounts"]}
    assert "scripts" in mounted


def _replicas(k8s: dict, kind: str, name: str) -> int:
    doc = k8s[(kind, name)]
    if "replicas" in doc["spec"]:
        return int(doc["spec"]["replicas"])
    hpas = [d for (k, _), d in k8s.items() if k == "HorizontalPodAutoscaler"
            and d["spec"]["scaleTargetRef"]["name"] == name]
    return int(hpas[0]["spec"]["minReplicas"]) if hpas else 1


def _spread_problems(k8s: dict) -> list[str]:
    problems = []
    pdbs = [d for (kind, _), d in k8s.items() if kind == "PodDisruptionBudget"]
    for (kind, name), doc in k8s.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        replicas = _replicas(k8s, kind, name)
        if replicas < 2:
            continue
        labels = doc["spec"]["selector"]["matchLabels"]
        anti = _pod(doc).get("affinity", {}).get("podAntiAffinity", {})
        terms = [t.get("podAffinityTerm", t) for key in anti for t in anti[key]]
        if not any(t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"]["matchLabels"] == labels
                   for t in terms):
            problems.append(f"{kind}/{name}: no anti-affinity over kubernetes.io/hostname")
        budget = [p for p in pdbs if p["spec"]["selector"]["matchLabels"] == labels]
        if len(budget) != 1:
            problems.append(f"{kind}/{name}: {len(budget)} PodDisruptionBudgets")
            continue
        spec = budget[0]["spec"]
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        if not 1 <= allowed <= (replicas - 1) // 2 + (kind == "Deployment") * (replicas // 2):
            problems.append(f"{kind}/{name}: the budget lets {allowed} of {replicas} go")
    return problems


def test_every_workload_of_two_or_more_replicas_is_spread_and_budgeted(k8s: dict) -> None:
    assert _spread_problems(k8s) == []


@pytest.mark.parametrize("break_it", ["affinity", "budget"])
def test_the_spread_check_can_fail(k8s: dict, break_it: str) -> None:
    broken = copy.deepcopy(k8s)
    if break_it == "affinity":
        del _pod(broken[("StatefulSet", "rabbitmq")])["affinity"]
    else:
        broken[("PodDisruptionBudget", "mongodb")]["spec"]["maxUnavailable"] = 2
    assert len(_spread_problems(broken)) == 1
