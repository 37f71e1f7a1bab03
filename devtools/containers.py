"""The fleet in containers on this machine: ``make images``, ``make compose-up``, ``make compose-down``.

    python -m devtools.containers images        # engine up if needed, base images, the fleet image
    python -m devtools.containers up            # the compose stack on 5000-5004, waits for /ready
    python -m devtools.containers down          # removes it (and stops the engine if we started it)

No container registry can be reached here, so nothing is pulled: the engine is Debian's
``dockerd`` (started when none answers, its data root kept in one fixed place so images
are cached between runs), the base image is made with debootstrap from the machine's own
Debian mirror, and the stand-ins for the official images are built from Debian packages
and PyPI (docker/local/Dockerfile). Production builds the same Dockerfile on the official
Python image (its default ``PYTHON_IMAGE``) and runs docker-compose.yml alone.

The host's pip configuration (index URLs) and CA bundle reach the builds as BuildKit
secrets: they are used by ``pip install`` and written into no layer and no file in git.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / "docker" / "local"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.local.yml")

# Outside the repository and fixed, so every run on this machine (CI included) reuses
# the images already built. DROPBOX_DOCKER_ROOT moves it.
DATA_ROOT = Path(os.environ.get("DROPBOX_DOCKER_ROOT", "/var/lib/dropbox-docker"))
RUN_DIR = Path(os.environ.get("DROPBOX_DOCKER_RUN", "/run/dropbox-docker"))
SOCKET = RUN_DIR / "docker.sock"
PIDFILE = RUN_DIR / "dockerd.pid"
STARTED_MARK = RUN_DIR / "started-by-devtools"  # only a daemon we started is ever stopped by us

IMAGE = "file-dropbox:local"
DEBIAN_IMAGE = "local/debian:bookworm"
PYTHON_IMAGE = "file-dropbox-local/python:3.11"
STANDINS = {  # docker/local/Dockerfile target -> tag (docker-compose.local.yml names these)
    "postgres": "file-dropbox-local/postgres:15",
    "redis": "file-dropbox-local/redis:7",
    "rabbitmq": "file-dropbox-local/rabbitmq:3",
    "secantusdb": "file-dropbox-local/secantusdb:0.7",
    "standin": "file-dropbox-local/standin:1",
}
SIZE_TARGET_MB = 250

# compose's published host ports (docker-compose.yml interpolates these; defaults = `make run`'s).
SERVICE_PORTS = {"socket_gateway": 5000, "auth": 5001, "file_uploader": 5002,
                 "file_service_manager": 5003, "pool_aggregator": 5004}
OTHER_PORTS = {"RABBITMQ_UI": 15672, "LOGSTASH": 5959, "KIBANA": 5601}


def publish_var(name: str) -> str:
    return f"PUBLISH_{name.upper()}_PORT"


class EngineUnavailable(RuntimeError):
    """No container engine answers and none can be started here (the reason says why)."""


def log(message: str) -> None:
    print(f"[containers] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the engine


@dataclass(frozen=True)
class Engine:
    host: str  # DOCKER_HOST
    started: bool  # started by this call: the caller stops it (stop_engine) when done

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, **(extra or {})}


def _responds(host: str) -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run([docker, "-H", host, "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def ensure_engine(start_timeout: float = 60.0) -> Engine:
    """An engine that answers: DOCKER_HOST, the system's, ours (left by an earlier run), or
    ``dockerd`` started now with its data root in DATA_ROOT (``started=True``)."""
    if shutil.which("docker") is None:
        raise EngineUnavailable("no docker client on PATH (Debian: apt-get install docker.io)")
    candidates = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
    candidates += ["unix:///var/run/docker.sock", f"unix://{SOCKET}"]
    for host in candidates:
        if (not host.startswith("unix://") or Path(host[7:]).exists()) and _responds(host):
            return Engine(host, started=False)
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineUnavailable("no engine answers and dockerd is not installed (Debian: apt-get install docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailable("no engine answers and dockerd can only be started as root here")
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log_path = DATA_ROOT.parent / "dropbox-dockerd.log"
    host = f"unix://{SOCKET}"
    argv = [dockerd, "--data-root", str(DATA_ROOT), "--exec-root", str(RUN_DIR / "exec"),
            "-H", host, "--pidfile", str(PIDFILE)]
    with open(log_path, "ab") as out:
        # A daemon: its own session, so it outlives `make images` for `make compose-up`.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise EngineUnavailable(f"dockerd exited with {proc.returncode}: " + " | ".join(tail))
        if _responds(host):
            STARTED_MARK.write_text(str(proc.pid))
            log(f"started dockerd (pid {proc.pid}, data root {DATA_ROOT}, log {log_path})")
            return Engine(host, started=True)
        time.sleep(0.5)
    proc.terminate()
    raise EngineUnavailable(f"dockerd did not answer within {start_timeout:.0f}s (see {log_path})")


def _alive(pid: int) -> bool:
    """False once ``pid`` has exited. Started in this process (the test), it is our child:
    reap it, or it lingers as a zombie that kill(pid, 0) still finds."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:  # another process's child (dockerd left by `make images`)
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_engine(timeout: float = 30.0) -> bool:
    """Stop the dockerd this module started (its pid is in STARTED_MARK); never another."""
    try:
        pid = int(STARTED_MARK.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        STARTED_MARK.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout  # dockerd stops its containers first (10 s each at most)
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.3)
    STARTED_MARK.unlink(missing_ok=True)
    log(f"stopped dockerd (pid {pid})")
    return True


def docker(engine: Engine, *args: str, check: bool = True, capture: bool = False,
           timeout: float | None = None, extra_env: Mapping[str, str] | None = None,
           client: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [client or shutil.which("docker") or "docker", *args]
    return subprocess.run(argv, env=engine.env(extra_env), check=check, text=True, timeout=timeout,
                          capture_output=capture)


def image_exists(engine: Engine, tag: str) -> bool:
    return docker(engine, "image", "inspect", tag, check=False, capture=True).returncode == 0


def image_size_mb(engine: Engine, tag: str) -> float:
    out = docker(engine, "image", "inspect", "--format", "{{.Size}}", tag, capture=True).stdout
    return int(out.strip()) / 1e6


def buildkit_client() -> tuple[str, dict[str, str]]:
    """A docker client that builds with BuildKit (needed for build secrets): one with the
    buildx plugin, or a pre-23 client (Debian's docker.io), whose BuildKit is built in."""
    seen: list[str] = []
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if not candidate or candidate in seen or not Path(candidate).exists():
            continue
        seen.append(candidate)
        if subprocess.run([candidate, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return candidate, {"DOCKER_BUILDKIT": "1"}
        version = subprocess.run([candidate, "version", "--format", "{{.Client.Version}}"],
                                 capture_output=True, text=True, check=False).stdout.strip()
        if version and int(version.split(".")[0]) < 23:
            return candidate, {"DOCKER_BUILDKIT": "1"}
    raise EngineUnavailable(f"no docker client with BuildKit among {seen} (install docker-buildx or docker.io)")


# ------------------------------------------------------------- host pip config -> secrets


def _pip_config() -> dict[str, str]:
    """The host's effective pip settings (files, then PIP_* environment), last one wins."""
    found: dict[str, str] = {}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                                text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    for key in ("index-url", "extra-index-url", "trusted-host", "cert", "timeout"):
        env_value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env_value:
            found[key] = env_value
    return found


def build_secrets(workdir: Path) -> list[str]:
    """``--secret`` options: a pip.conf with the host's network indexes (local file:// ones
    cannot be seen from a build) and the host's CA bundle (a TLS-inspecting proxy's CA)."""
    config = _pip_config()
    lines = ["[global]"]
    if config.get("index-url", "").startswith(("http://", "https://")):
        lines.append(f"index-url = {config['index-url']}")
    extra = [u for u in config.get("extra-index-url", "").split() if u.startswith(("http://", "https://"))]
    if extra:
        lines.append("extra-index-url = " + " ".join(extra))
    for key in ("trusted-host", "timeout"):
        if config.get(key):
            lines.append(f"{key} = {config[key]}")
    pipconf = workdir / "pip.conf"
    pipconf.write_text("\n".join(lines) + "\n")
    pipconf.chmod(0o600)
    options = ["--secret", f"id=pipconf,src={pipconf}"]
    for ca in (config.get("cert"), os.environ.get("SSL_CERT_FILE"), os.environ.get("REQUESTS_CA_BUNDLE"),
               "/etc/ssl/certs/ca-certificates.crt"):
        if ca and Path(ca).is_file():
            options += ["--secret", f"id=cacert,src={ca}"]
            break
    return options


# ------------------------------------------------------------------------- base images


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian archive this machine's apt uses (not the security archive)."""
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for block in text.split("\n\n"):  # deb822 stanzas (.sources)
            fields = dict(line.split(":", 1) for line in block.splitlines()
                          if ":" in line and not line.startswith(("#", " ")))
            uris = fields.get("URIs", "").split()
            if uris and "bookworm" in fields.get("Suites", "").split() and "security" not in uris[0]:
                return uris[0]
        for line in text.splitlines():  # one-line format (.list)
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[-3] and "bookworm" in parts:
                return next(p for p in parts[1:] if "://" in p)
    return "http://deb.debian.org/debian"


def ensure_debian(engine: Engine) -> None:
    """local/debian:bookworm, made once by debootstrap (minbase) and imported."""
    if image_exists(engine, DEBIAN_IMAGE):
        return
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable(f"{DEBIAN_IMAGE} is absent and debootstrap is not installed")
    mirror = debian_mirror()
    log(f"making {DEBIAN_IMAGE} with debootstrap from {mirror} (once per machine)")
    work = Path(tempfile.mkdtemp(prefix="dropbox-rootfs-", dir="/var/tmp"))
    try:
        root = work / "root"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), mirror], check=True,
                       stdout=subprocess.DEVNULL)
        # The downloaded .debs and package lists are a build's to fetch again, not the image's.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/info", "usr/share/locale", "var/log"):
            target = root / junk
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([shutil.which("docker") or "docker", "import", "-c", 'CMD ["bash"]', "-", DEBIAN_IMAGE],
                       stdin=tar.stdout, env=engine.env(), check=True, stdout=subprocess.DEVNULL)
        if tar.stdout:
            tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build(engine: Engine, tag: str, context: Path, *, dockerfile: Path | None = None, target: str | None = None,
          args: Mapping[str, str] | None = None, secrets: Sequence[str] = ()) -> float:
    """docker build with BuildKit; returns the seconds it took."""
    client, extra_env = buildkit_client()
    argv = ["build", "--progress=plain", "-t", tag]
    if dockerfile:
        argv += ["-f", str(dockerfile)]
    if target:
        argv += ["--target", target]
    for key, value in (args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    argv += [*secrets, str(context)]
    started = time.monotonic()
    quiet = os.environ.get("DROPBOX_BUILD_VERBOSE") != "1"
    done = docker(engine, *argv, check=False, capture=quiet, extra_env=extra_env, client=client)
    if done.returncode != 0:
        if quiet:
            sys.stderr.write((done.stdout or "")[-6000:] + (done.stderr or "")[-6000:])
        raise RuntimeError(f"building {tag} failed (exit {done.returncode})")
    return time.monotonic() - started


def build_images(engine: Engine, *, standins: bool = True) -> dict[str, float]:
    """Every image the local stack needs; returns seconds per image (cached layers make a
    rebuild quick). Prints the fleet image's size against the target."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_debian(engine)
    timings["debian"] = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="dropbox-build-") as tmp:
        secrets = build_secrets(Path(tmp))
        def local(tag: str, target: str) -> float:
            return build(engine, tag, LOCAL_DIR, dockerfile=LOCAL_DIR / "Dockerfile", target=target,
                         args={"DEBIAN_IMAGE": DEBIAN_IMAGE}, secrets=secrets)

        timings["python"] = local(PYTHON_IMAGE, "python")
        timings["file-dropbox"] = build(engine, IMAGE, ROOT, args={"PYTHON_IMAGE": PYTHON_IMAGE}, secrets=secrets)
        if standins:
            for target, tag in STANDINS.items():
                timings[target] = local(tag, target)
    size = image_size_mb(engine, IMAGE)
    verdict = "within" if size < SIZE_TARGET_MB else "OVER"
    log(f"{IMAGE}: {size:.0f} MB ({verdict} the {SIZE_TARGET_MB} MB target)")
    log("build seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f"; total {time.monotonic() - started:.0f}")
    return timings


# ---------------------------------------------------------------------------- compose


def compose_argv(project: str) -> list[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        raise EngineUnavailable("docker-compose is not installed (Debian: apt-get install docker-compose)")
    argv = [exe, "--project-directory", str(ROOT), "-p", project]
    for name in COMPOSE_FILES:
        argv += ["-f", str(ROOT / name)]
    return argv


def compose(engine: Engine, project: str, *args: str, ports: Mapping[str, int] | None = None,
            check: bool = True, capture: bool = False, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    env = engine.env({publish_var(k): str(v) for k, v in (ports or {}).items()})
    return subprocess.run([*compose_argv(project), *args], cwd=ROOT, env=env, check=check, text=True,
                          capture_output=capture, timeout=timeout)


def ensure_env_file() -> bool:
    """docker-compose.yml reads .env; made from .env.example when absent. True if made now."""
    env_file = ROOT / ".env"
    if env_file.exists():
        return False
    shutil.copyfile(ROOT / ".env.example", env_file)
    log("made .env from .env.example (development defaults)")
    return True


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=3) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def wait_ready(urls: Mapping[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = dict(urls)
    while waiting:
        waiting = {name: url for name, url in waiting.items() if not ready(url)}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready within {timeout:.0f}s: {sorted(waiting)}")
        time.sleep(1)


def up(engine: Engine, project: str, ports: Mapping[str, int] | None = None, timeout: float = 300) -> dict[str, str]:
    """Bring the stack up (images must exist: build_images) and wait for every /ready.
    ``ports``: SERVICE_PORTS/OTHER_PORTS names -> host ports; unset ones keep the defaults."""
    chosen = {**SERVICE_PORTS, **OTHER_PORTS, **(ports or {})}
    compose(engine, project, "up", "-d", "--no-build", ports=chosen)
    urls = {name: f"http://127.0.0.1:{chosen[name]}" for name in SERVICE_PORTS}
    wait_ready(urls, timeout)
    return urls


def down(engine: Engine, project: str, *, volumes: bool = False) -> None:
    args = ["down", "--remove-orphans", "--timeout", "20"] + (["--volumes"] if volumes else [])
    compose(engine, project, *args, check=False)


# -------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.containers", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["images", "up", "down", "engine-stop"])
    parser.add_argument("--project", default="file-dropbox", help="compose project name")
    options = parser.parse_args(argv)
    try:
        if options.command == "engine-stop":
            stop_engine()
            return 0
        engine = ensure_engine()
        if options.command == "images":
            build_images(engine)
        elif options.command == "up":
            for tag in (IMAGE, *STANDINS.values()):
                if not image_exists(engine, tag):
                    raise RuntimeError(f"{tag} is missing: run `make images` first")
            ensure_env_file()
            urls = up(engine, options.project)
            log("ready: " + ", ".join(f"{name} {url}" for name, url in urls.items()))
            log(f"dashboard {urls['socket_gateway']}/ ; DOCKER_HOST={engine.host} docker-compose ... to look inside")
        else:
            down(engine, options.project)
            running = docker(engine, "ps", "-q", capture=True).stdout.split()
            if not running:
                stop_engine()  # only if we started it; one that was running before stays
    except (EngineUnavailable, RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
