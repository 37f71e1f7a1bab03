"""Issue 15: the image and the compose stack, built and run for real.

Builds the fleet's image (and, where no registry can be reached, its base images from
Debian packages: devtools.containers), brings docker-compose.yml + docker-compose.local.yml
up under a project name of its own on free host ports (so `make run` and other tests can
keep 5000-5004), and drives the containers only through the published ports: one upload
stored and downloaded, one pool round, one service container stopped and started again
in the middle of an upload. It also checks the image's hygiene and that kubernetes/ points
at what the image really serves. Everything it made is removed at the end, failure or not
(containers, networks, volumes, and the engine if this test started it).

Skipped, with the reason, when no container engine answers and none can be started.
The first run on a machine builds the base images (minutes); later runs reuse them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from devtools import containers, infra

from .helpers import RawSocket, bearer, sha256_hex, signup
from .pools import Admin, Processor, window_timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
# compose service name -> module (python -m services.<module>)
MODULES = {"auth": "auth", "socket-gateway": "socket_gateway", "file-uploader": "file_uploader",
           "file-service-manager": "file_service_manager", "pool-aggregator": "pool_aggregator"}


@dataclass
class Stack:
    engine: containers.Engine
    project: str
    ports: dict[str, int]  # SERVICE_PORTS / OTHER_PORTS names -> host port
    urls: dict[str, str]  # module -> http://127.0.0.1:<published port>
    admin: tuple[str, str]

    @property
    def gateway(self) -> str:
        return self.urls["socket_gateway"]

    def container(self, service: str) -> str:
        out = containers.compose(self.engine, self.project, "ps", "-q", service, ports=self.ports,
                                 capture=True).stdout.split()
        assert len(out) == 1, (service, out)
        return out[0]

    def inspect(self, ref: str) -> dict:
        out = containers.docker(self.engine, "inspect", ref, capture=True).stdout
        return json.loads(out)[0]


def _env_file() -> dict[str, str]:
    env = {}
    for line in (ROOT / ".env").read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def _remove_leftovers(engine: containers.Engine, project: str) -> None:
    """What `down` may have left (a container it could not stop in time): by the project's label."""
    label = f"label=com.docker.compose.project={project}"
    for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]),
                          ("volume", ["volume", "ls", "-q"])):
        found = containers.docker(engine, *listing, "--filter", label, capture=True, check=False).stdout.split()
        if found:
            remove = ["rm", "-f"] if kind == "container" else [kind, "rm"]
            containers.docker(engine, *remove, *found, check=False, capture=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    try:
        engine = containers.ensure_engine()
        containers.compose_argv("probe")  # docker-compose installed?
        containers.buildkit_client()
    except containers.EngineUnavailable as exc:
        pytest.skip(f"no container engine: {exc}")
    made_env = False
    project = f"dbxe2e{uuid.uuid4().hex[:8]}"
    ports = {name: infra.free_port() for name in (*containers.SERVICE_PORTS, *containers.OTHER_PORTS)}
    try:
        started = time.monotonic()
        containers.build_images(engine)
        print(f"\nimages built in {time.monotonic() - started:.0f}s")
        made_env = containers.ensure_env_file()
        env = _env_file()
        started = time.monotonic()
        urls = containers.up(engine, project, ports, timeout=300)
        print(f"stack {project} ready in {time.monotonic() - started:.0f}s")
        yield Stack(engine, project, ports, urls, (env["ADMIN_USER"], env["ADMIN_PASSWORD"]))
    finally:
        logs = ROOT / "artifacts" / "container-logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{project}.log", "w") as out:
            subprocess.run([*containers.compose_argv(project), "logs", "--no-color", "--tail", "300"], cwd=ROOT,
                           env=engine.env(), stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False)
        containers.down(engine, project, volumes=True)
        _remove_leftovers(engine, project)
        if made_env:
            (ROOT / ".env").unlink(missing_ok=True)
        if engine.started:
            containers.stop_engine()


# ------------------------------------------------------------------ image and manifests


def test_image_hygiene(stack: Stack) -> None:
    image = stack.inspect(containers.IMAGE)["Config"]
    assert image["User"] == "10001:10001", "the services must not run as root"
    assert image["Entrypoint"] == ["/usr/bin/tini", "--"], "tini as PID 1 forwards SIGTERM"
    assert image["Healthcheck"]["Test"] == ["CMD", "python", "/app/healthcheck.py"]
    size_mb = containers.image_size_mb(stack.engine, containers.IMAGE)
    assert size_mb < containers.SIZE_TARGET_MB, f"{size_mb:.0f} MB"
    env_names = {item.split("=", 1)[0] for item in image.get("Env", [])}
    baked = env_names & {"INTERNAL_API_KEY", "JWT_SECRET", "ADMIN_PASSWORD", "DATABASE_URL", "AMQP_URL",
                         "PIP_INDEX_URL", "PIP_CERT", "PIP_CONFIG_FILE"}
    assert not baked, f"secrets or host specifics baked into the image: {baked}"
    for service, module in MODULES.items():
        ref = stack.container(service)
        info = stack.inspect(ref)
        assert info["Path"] == "/usr/bin/tini" and info["Args"] == ["--", "python", "-m", f"services.{module}"]
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        # The image's own HEALTHCHECK (compose replaces it with its own): finds the service and its port.
        check = containers.docker(stack.engine, "exec", ref, "python", "/app/healthcheck.py", check=False,
                                  capture=True)
        assert check.returncode == 0, (service, check.stderr)
        who = containers.docker(stack.engine, "exec", ref, "id", "-u", capture=True).stdout.strip()
        assert who == "10001"


def _k8s_deployments() -> dict[str, dict]:
    found = {}
    for path in sorted((ROOT / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                found[doc["metadata"]["name"]] = doc
    return found


def test_kubernetes_manifests_match_what_the_image_serves(stack: Stack) -> None:
    deployments = _k8s_deployments()
    assert set(deployments) == set(MODULES)
    config = next(doc for path in sorted((ROOT / "kubernetes").glob("*.yaml"))
                  for doc in yaml.safe_load_all(path.read_text())
                  if doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == "dropbox-config")["data"]
    image_user = stack.inspect(containers.IMAGE)["Config"]["User"]
    for service, module in MODULES.items():
        pod = deployments[service]["spec"]["template"]["spec"]
        spec = pod["containers"][0]
        # The image name the kustomization rewrites is the repository `make images` builds.
        assert spec["image"].split(":")[0] == containers.IMAGE.split(":")[0]
        # args, not command: a Kubernetes `command` would replace the image's tini entrypoint.
        assert "command" not in spec and spec["args"] == ["python", "-m", f"services.{module}"]
        info = stack.inspect(stack.container(service))
        served = {int(key.split("/")[0]) for key, binding in info["NetworkSettings"]["Ports"].items() if binding}
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        assert served == {ports["http"]}, (service, served, ports)
        assert int(config[f"{module.upper()}_PORT"]) == ports["http"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = spec[probe]["httpGet"]
            assert http["port"] in ("http", ports["http"])
            answer = requests.get(f"{stack.urls[module]}{http['path']}", timeout=10)
            assert answer.status_code == 200, (service, probe, http["path"], answer.text)
        uid, gid = (int(x) for x in image_user.split(":"))
        assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsGroup"] == gid
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True  # as compose runs it, read_only
    gateway = stack.container("socket-gateway")
    listing = containers.docker(stack.engine, "exec", gateway, "ls", config["FRONTEND_DIR"], capture=True).stdout
    assert "index.html" in listing.split(), f"FRONTEND_DIR {config['FRONTEND_DIR']} is not the image's frontend"
    assert config["HOST"] == "0.0.0.0"


# ------------------------------------------------------------------------ the services


def _download(stack: Stack, token: str, file_id: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with requests.get(f"{stack.urls['file_service_manager']}/file/{file_id}", headers=bearer(token),
                      stream=True, timeout=60) as answer:
        assert answer.status_code == 200, answer.text
        for block in answer.iter_content(MiB):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def test_upload_is_stored_and_downloaded(stack: Stack) -> None:
    user = signup(stack.urls["auth"])
    data = os.urandom(6 * MiB + 123)  # more than one chunk of the default 4 MiB
    sock = RawSocket(stack.gateway, user["access_token"])
    try:
        file_id = sock.upload_bytes(data, "container.bin")
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=90)
    finally:
        sock.close()
    assert _download(stack, user["access_token"], file_id) == (sha256_hex(data), len(data))


def test_pool_round_reaches_every_member(stack: Stack) -> None:
    admin = Admin(stack)
    pool_id = admin.create_pool(f"containers-{uuid.uuid4().hex[:6]}", window_seconds=60, close_grace_seconds=30,
                                min_contributors=2, processing_timeout_seconds=60)["pool_id"]
    key = admin.processor_key(pool_id)
    contributors = [admin.member(pool_id) for _ in range(2)]
    listener = admin.member(pool_id, role="listener")
    sockets = [RawSocket(stack.gateway, m["access_token"]) for m in (*contributors, listener)]
    try:
        timestamp = window_timestamp(60, offset=1)
        for sock in sockets[:2]:
            sock.upload_bytes(os.urandom(100_000), "update.bin", pool_id=pool_id, timestamp=timestamp)
        processor = Processor(stack, pool_id, key)
        group = processor.wait_ready(timeout=60)
        assert processor.files(group["group_id"]).status_code == 200
        result = os.urandom(50_000)
        posted = processor.post_result(group["group_id"], result, "mean.bin")
        assert posted.status_code == 201, posted.text
        for sock, member in zip(sockets, (*contributors, listener), strict=True):
            event = sock.wait_event("pool-result", lambda d: d["group_id"] == group["group_id"], timeout=60)
            assert event["result_id"] == posted.json()["result_id"]
            # download_url names the host's published port (docker-compose.local.yml's PUBLIC_FILE_URL).
            got = requests.get(event["download_url"], headers=bearer(member["access_token"]), timeout=30)
            assert got.status_code == 200 and got.content == result, event["download_url"]
    finally:
        for sock in sockets:
            sock.close()


def test_uploader_container_restarted_mid_upload_loses_nothing(stack: Stack) -> None:
    user = signup(stack.urls["auth"])
    data = os.urandom(10 * MiB)
    expected = sha256_hex(data)
    sock = RawSocket(stack.gateway, user["access_token"])
    try:
        ack = sock.call("start-transfer", {"file_name": "restart.bin", "size": len(data), "sha256": expected})
        assert "error" not in ack, ack
        file_id, chunk = ack["file_id"], ack["chunk_size"]
        count = math.ceil(len(data) / chunk)
        sent = count // 2
        assert 0 < sent < count
        for index in range(sent):
            answer = sock.call("write-chunk", {"file_id": file_id, "index": index,
                                               "data": data[index * chunk:(index + 1) * chunk]})
            assert "error" not in answer, answer

        started = time.monotonic()
        containers.compose(stack.engine, stack.project, "stop", "--timeout", "20", "file-uploader", ports=stack.ports)
        stopped_in = time.monotonic() - started
        # tini hands SIGTERM to the service, which stops at once; without it the engine
        # would wait the whole 20 s and then SIGKILL.
        assert stopped_in < 10, f"file-uploader took {stopped_in:.1f}s to stop on SIGTERM"
        state = stack.inspect(stack.container("file-uploader"))["State"]
        assert state["ExitCode"] in (0, 143) and not state["OOMKilled"], state
        containers.compose(stack.engine, stack.project, "start", "file-uploader", ports=stack.ports)
        containers.wait_ready({"file_uploader": stack.urls["file_uploader"]}, timeout=120)

        deadline = time.monotonic() + 60  # the gateway may answer `unavailable` until it reaches the new one
        while True:
            ack = sock.call("start-transfer", {"file_id": file_id, "file_name": "restart.bin", "size": len(data),
                                               "sha256": expected})
            if "error" not in ack or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert "error" not in ack, ack
        assert ack["missing"] == list(range(sent, count)), ack  # what arrived before the stop is kept
        for index in ack["missing"]:
            answer = sock.call("write-chunk", {"file_id": file_id, "index": index,
                                               "data": data[index * chunk:(index + 1) * chunk]})
            assert "error" not in answer, answer
        done = sock.call("complete-upload", {"file_id": file_id})
        assert done.get("status") == "cached", done
        sock.wait_event("file-status", lambda d: d["file_id"] == file_id and d["status"] == "uploaded_successfully",
                        timeout=90)
    finally:
        sock.close()
    assert _download(stack, user["access_token"], file_id) == (expected, len(data))
