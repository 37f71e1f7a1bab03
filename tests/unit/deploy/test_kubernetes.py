"""Every Kubernetes manifest, validated offline against the Kubernetes schemas
(kubernetes-validate ships them), plus the rules the fleet relies on."""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.common.settings import DEV_SECRETS

from .conftest import APP_SECRETS, K8S_DIR, ROOT, SERVICES, load_k8s_docs

# Pinned: a version kubernetes-validate ships schemas for (offline), and the
# oldest minor we claim to support.
K8S_VERSION = "1.30.0"

DOCS = load_k8s_docs()


@pytest.mark.parametrize("filename,doc", DOCS,
                         ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_manifest_is_valid_against_kubernetes_schema(filename: str, doc: dict[str, Any]) -> None:
    # strict: an unknown (misspelt) field is an error, not silently dropped by the API server.
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_broken_manifests() -> None:
    """Proves the check above can fail, offline: a typo and a wrong type are both caught."""
    deployment = copy.deepcopy(next(d for _, d in DOCS if d["kind"] == "Deployment"))
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk
    assert kustomization["namespace"] == "file-dropbox"
    assert [i["name"] for i in kustomization["images"]] == ["file-dropbox"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds_offline() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert len(built) == len(DOCS)
    assert all(d["metadata"].get("namespace", "file-dropbox") == "file-dropbox" for d in built)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_one_deployment_and_service_per_service(k8s: dict) -> None:
    deployments = {name for kind, name in k8s if kind == "Deployment"}
    assert deployments == set(SERVICES.values())
    for name in SERVICES.values():
        assert ("Service", name) in k8s, f"no Service {name}"


@pytest.mark.parametrize("module,name", SERVICES.items())
def test_deployment_runs_its_module_safely(k8s: dict, module: str, name: str) -> None:
    deployment = k8s[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    # args (the image's CMD), never command: that would replace the image's tini entrypoint.
    assert container["args"] == ["python", "-m", f"services.{module}"] and "command" not in container
    assert container["image"] == "file-dropbox:0.1.0"  # rewritten by kustomization images:

    port_key = f"{module.upper()}_PORT"
    port = int(k8s[("ConfigMap", "dropbox-config")]["data"][port_key])
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    service = k8s[("Service", name)]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == port
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)

    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"

    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    # Read-only root: /tmp must be a volume (waitress spools large bodies there).
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])

    refs = [next(iter(e.values()))["name"] for e in container["envFrom"]]
    assert refs[:2] == ["dropbox-config", "dropbox-secrets"]
    # The JWT secret and the database URL reach auth alone.
    assert ("dropbox-auth-secrets" in refs) == (module == "auth")
    for ref in refs:
        assert ("ConfigMap", ref) in k8s or ("Secret", ref) in k8s


@pytest.mark.parametrize("name,port", [("postgres", 5432), ("redis", 6379), ("rabbitmq", 5672),
                                       ("mongodb", 27017)])
def test_data_layer_is_a_statefulset_with_storage_and_headless_service(k8s: dict, name: str,
                                                                       port: int) -> None:
    sts = k8s[("StatefulSet", name)]
    assert sts["spec"]["serviceName"] == name
    assert sts["spec"]["volumeClaimTemplates"], "no persistent volume"
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert claim in {m["name"] for m in mounts}
    headless = k8s[("Service", name)]
    assert headless["spec"]["clusterIP"] == "None"
    assert port in [p["port"] for p in headless["spec"]["ports"]]
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert sts["spec"]["template"]["metadata"]["labels"]["dropbox/tier"] == "data"
    # Every secretKeyRef names a key that exists.
    for env in sts["spec"]["template"]["spec"]["containers"][0].get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in k8s[("Secret", ref["name"])]["stringData"]


def _prefix_match(rule_path: str, path: str) -> bool:
    """Kubernetes pathType Prefix: element-wise ("/file" matches "/file/x", not "/files")."""
    if rule_path == "/":
        return True
    return path == rule_path or path.startswith(rule_path.rstrip("/") + "/")


def _matches(rule: dict[str, Any], path: str) -> bool:
    assert rule["pathType"] in ("Prefix", "Exact")
    return rule["path"] == path if rule["pathType"] == "Exact" else _prefix_match(rule["path"], path)


def _route_or_none(k8s: dict, path: str) -> tuple[str, str] | None:
    """The (ingress, service) ``path`` goes to: the longest matching path, Exact before Prefix on a tie."""
    best: tuple[tuple[int, int], str, str] | None = None
    for (kind, ingress_name), doc in k8s.items():
        if kind != "Ingress":
            continue
        for rule in doc["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                rank = (len(p["path"]), 1 if p["pathType"] == "Exact" else 0)
                if _matches(p, path) and (best is None or rank > best[0]):
                    best = (rank, ingress_name, p["backend"]["service"]["name"])
    return None if best is None else (best[1], best[2])


def _route(k8s: dict, path: str) -> tuple[str, str]:
    found = _route_or_none(k8s, path)
    assert found is not None, f"nothing routes {path}"
    return found


@pytest.mark.parametrize("path,service", [
    ("/socket.io/", "socket-gateway"),
    ("/", "socket-gateway"),
    ("/index.html", "socket-gateway"),
    ("/auth/signup", "auth"),
    ("/auth/login/alice", "auth"),
    ("/auth/logout/alice", "auth"),
    ("/auth/refresh", "auth"),
    ("/auth/validate", "auth"),
    ("/auth/users", "auth"),
    ("/auth/users/alice", "auth"),
    ("/auth/pools", "auth"),
    ("/auth/pools/p1/members/alice", "auth"),
    ("/auth/pools/p1/processor-keys", "auth"),
    ("/file/upload", "file-uploader"),
    ("/file/0123abcd", "file-service-manager"),
    ("/files", "file-service-manager"),
    ("/client/history/u1", "file-service-manager"),
    ("/audit", "file-service-manager"),
    ("/pools/p1/groups", "pool-aggregator"),
    ("/pools/p1/groups/g1/files", "pool-aggregator"),
    ("/pools/p1/groups/g1/archive", "pool-aggregator"),
    ("/pools/p1/results", "pool-aggregator"),
])
def test_ingress_routes_spec_paths_to_their_service(k8s: dict, path: str, service: str) -> None:
    assert _route(k8s, path)[1] == service


@pytest.mark.parametrize("path", [
    "/health", "/ready", "/metrics", "/config.json",
    "/auth/internal/processor-keys/verify", "/auth/internal/pools/p1", "/auth/internal/pools/p1/members",
    "/uploads", "/uploads/f1", "/uploads/f1/chunks/0", "/uploads/f1/complete", "/uploads/f1/release",
    "/package.json", "/eslint.config.js", "/anything-else",
])
def test_internal_and_operations_routes_are_not_routed(k8s: dict, path: str) -> None:
    # /metrics, /ready and the internal routes are for the cluster (Prometheus, probes, services).
    assert _route_or_none(k8s, path) is None, f"the ingress routes {path}"


def test_file_update_status_does_not_reach_the_uploader(k8s: dict) -> None:
    # Internal (X-Internal-Key): it falls under /file (file_service_manager has no such route: 404).
    assert _route(k8s, "/file/update/status")[1] != "file-uploader"


def test_every_dashboard_file_is_routed_to_the_gateway(k8s: dict) -> None:
    frontend = ROOT / "frontend"
    shipped = [p for p in frontend.rglob("*") if p.is_file() and p.suffix in (".js", ".css", ".html")
               and "node_modules" not in p.parts and p.name != "eslint.config.js"]
    assert len(shipped) >= 5
    for file in shipped:
        path = "/" + file.relative_to(frontend).as_posix()
        assert _route_or_none(k8s, path) == ("dropbox-gateway", "socket-gateway"), path


def test_only_the_gateway_is_sticky(k8s: dict) -> None:
    ingresses = {name: doc for (kind, name), doc in k8s.items() if kind == "Ingress"}
    for name, doc in ingresses.items():
        backends = {p["backend"]["service"]["name"] for r in doc["spec"]["rules"] for p in r["http"]["paths"]}
        annotations = doc["metadata"].get("annotations", {})
        sticky = annotations.get("nginx.ingress.kubernetes.io/affinity") == "cookie"
        assert sticky == (backends == {"socket-gateway"}), name
    assert _route(k8s, "/socket.io/") == ("dropbox-gateway", "socket-gateway")



def _size(value: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def test_ingress_body_limits_fit_the_services_limits(k8s: dict) -> None:
    config = k8s[("ConfigMap", "dropbox-config")]["data"]
    api = k8s[("Ingress", "dropbox-api")]["metadata"]["annotations"]
    api_limit = _size(api["nginx.ingress.kubernetes.io/proxy-body-size"])
    # The largest file plus multipart framing, and the largest result, pass the edge.
    assert api_limit >= int(config["MAX_FILE_SIZE"]) + 1024 ** 2
    assert api_limit >= int(config["RESULT_MAX_BYTES"])
    gateway = k8s[("Ingress", "dropbox-gateway")]["metadata"]["annotations"]
    # A write-chunk on the polling transport: the chunk base64-encoded plus framing.
    gateway_limit = _size(gateway["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert gateway_limit >= int(config["MAX_CHUNK_BYTES"]) * 4 // 3


def test_file_uploader_refuses_before_redis_does(k8s: dict) -> None:
    container = k8s[("StatefulSet", "redis")]["spec"]["template"]["spec"]["containers"][0]
    args = container.get("command", []) + container.get("args", [])
    maxmemory = _size(args[args.index("--maxmemory") + 1].removesuffix("b"))
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"  # never evict a cached chunk
    assert int(k8s[("ConfigMap", "dropbox-config")]["data"]["MAX_REDIS_MEMORY_BYTES"]) < maxmemory


def test_hpas_scale_the_gateway_and_the_file_service_manager(k8s: dict) -> None:
    hpas = {name: doc for (kind, name), doc in k8s.items() if kind == "HorizontalPodAutoscaler"}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {"socket-gateway",
                                                                           "file-service-manager"}
    for hpa in hpas.values():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = k8s[("Deployment", hpa["spec"]["scaleTargetRef"]["name"])]
        # A fixed replica count would be re-applied over the HPA's choice on every apply.
        assert "replicas" not in target["spec"]
        assert hpa["spec"]["minReplicas"] >= 2


def test_secret_template_fails_safe_and_agrees_with_itself(k8s: dict) -> None:
    app = {}
    for name in APP_SECRETS:
        app.update(k8s[("Secret", name)]["stringData"])
    # Placeholders are the development defaults, which production refuses at start.
    for key, default in DEV_SECRETS.items():
        assert app[key] == default, f"{key}: the template must hold the dev default so production refuses it"
    assert k8s[("ConfigMap", "dropbox-config")]["data"]["DROPBOX_ENV"] == "production"
    data = k8s[("Secret", "dropbox-data-secrets")]["stringData"]
    assert f":{data['POSTGRES_PASSWORD']}@postgres:" in app["DATABASE_URL"]
    nodes = app["AMQP_URL"].split(",")  # every node of the cluster (rabbitmq.yaml)
    replicas = k8s[("StatefulSet", "rabbitmq")]["spec"]["replicas"]
    assert nodes == [f"amqp://{data['RABBITMQ_DEFAULT_USER']}:{data['RABBITMQ_DEFAULT_PASS']}"
                     f"@rabbitmq-{k}.rabbitmq:5672/%2F" for k in range(replicas)]
    # Credentials never sit in the ConfigMap.
    config = k8s[("ConfigMap", "dropbox-config")]["data"]
    assert not {"INTERNAL_API_KEY", "JWT_SECRET", "ADMIN_PASSWORD", "DATABASE_URL", "AMQP_URL"} & set(config)
