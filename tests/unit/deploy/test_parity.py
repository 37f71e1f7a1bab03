"""Compose and Kubernetes describe the same fleet, and both give the services
every environment variable the code reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.common.settings import DEV_SECRETS

from .conftest import APP_SECRETS, ROOT, SERVICES
from .test_compose import app_services

ENV_HELPERS = {"env_str", "env_int", "env_float", "env_bool", "env_secret"}
# In .env.example (development) but never in Kubernetes: test hooks refused in production.
DEV_ONLY = {"STORE_FAIL_PATTERN"}
# Read by the code but deliberately in no env file: settings.listen_address falls back
# to PORT when <SERVICE>_PORT is unset; one env file shared by five services must not set it.
DELIBERATELY_UNSET = {"PORT"}


def k8s_env_names(k8s: dict) -> set[str]:
    names = set(k8s[("ConfigMap", "dropbox-config")]["data"])
    for secret in APP_SECRETS:
        names |= set(k8s[("Secret", secret)]["stringData"])
    return names


def test_compose_and_kubernetes_name_the_same_services_and_commands(compose: dict, k8s: dict) -> None:
    compose_cmds = {name: svc["command"] for name, svc in app_services(compose).items()}
    # compose's command is the image's CMD, as Kubernetes' args are (its command is the ENTRYPOINT).
    k8s_cmds = {name: doc["spec"]["template"]["spec"]["containers"][0]["args"]
                for (kind, name), doc in k8s.items() if kind == "Deployment"}
    assert compose_cmds == k8s_cmds
    assert set(compose_cmds) == set(SERVICES.values())


def test_compose_env_file_and_kubernetes_carry_the_same_variable_names(env_example: dict, k8s: dict) -> None:
    names = k8s_env_names(k8s)
    assert set(env_example) - DEV_ONLY - names == set(), "in .env.example, missing from ConfigMap/Secrets"
    assert names - set(env_example) == set(), "in ConfigMap/Secrets, missing from .env.example"
    assert not DEV_ONLY & names, "a test-only hook must not reach the cluster"
    assert not DELIBERATELY_UNSET & (names | set(env_example))


def test_service_urls_point_at_services_that_exist_in_both(env_example: dict, k8s: dict,
                                                           compose: dict) -> None:
    config = k8s[("ConfigMap", "dropbox-config")]["data"]
    for module, name in SERVICES.items():
        if module == "socket_gateway":
            continue  # nobody calls the gateway by URL
        key = f"{module.upper()}_URL"
        port = env_example[f"{module.upper()}_PORT"]
        expected = f"http://{name}:{port}"
        assert env_example[key] == expected
        assert config[key] == expected
        assert name in compose["services"] and ("Service", name) in k8s
        # The browser reaches each API on the host's published port (compose) or
        # through the one ingress host (Kubernetes).
        public = f"PUBLIC_{module.upper()}_URL"
        if public in env_example:
            assert env_example[public] == f"http://localhost:{port}"
            assert config[public] == config["PUBLIC_FILE_URL"]


@pytest.mark.parametrize("module", SERVICES)
def test_service_entry_point_exists(module: str) -> None:
    # Fails until services/<module>/__main__.py lands: compose and Kubernetes start it.
    main = ROOT / "services" / module / "__main__.py"
    assert main.is_file(), f"python -m services.{module} has no __main__"


def env_names_read(paths: list[Path]) -> dict[str, str]:
    """Literal variable names the code reads: env helpers, env.get / os.environ / os.getenv.

    Names built at run time (settings.listen_address's f"{SERVICE}_PORT") are
    not literals; the port names are covered by the explicit check below.
    """
    found: dict[str, str] = {}

    def literal(node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isupper():
            return node.value
        return None

    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call):
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else (
                    func.attr if isinstance(func, ast.Attribute) else None)
                if fname in ENV_HELPERS and len(node.args) >= 2:
                    name = literal(node.args[1])
                elif fname == "getenv" and node.args:
                    name = literal(node.args[0])
                elif fname in ("get", "pop") and isinstance(func, ast.Attribute) and node.args:
                    target = func.value
                    is_env = (isinstance(target, ast.Name) and target.id in ("env", "environ")) or (
                        isinstance(target, ast.Attribute) and target.attr == "environ")
                    if is_env:
                        name = literal(node.args[0])
            elif isinstance(node, ast.Subscript):
                target = node.value
                is_env = (isinstance(target, ast.Name) and target.id in ("env", "environ")) or (
                    isinstance(target, ast.Attribute) and target.attr == "environ")
                if is_env:
                    name = literal(node.slice)
            if name:
                found.setdefault(name, where)
    return found


def test_the_scanner_sees_every_kind_of_read(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom services.common.settings import env_int, env_str\n"
        "def f(env):\n    return (env_str(env, 'A_ONE', 'x'), env_int(env, 'A_TWO', 1), env.get('A_THREE'),\n"
        "            os.environ['A_FOUR'], os.environ.get('A_FIVE'), os.getenv('A_SIX'), env.get('lower'),\n"
        "            {'A_SEVEN': 1}.get('A_SEVEN'))\n")
    assert set(env_names_read([sample])) == {"A_ONE", "A_TWO", "A_THREE", "A_FOUR", "A_FIVE", "A_SIX"}


def test_every_variable_the_services_read_is_in_env_example(env_example: dict) -> None:
    paths = sorted((ROOT / "services").rglob("*.py"))
    read = env_names_read(paths)
    assert {"INTERNAL_API_KEY", "AMQP_URL", "PUBLIC_FILE_URL", "LOGSTASH_PORT"} <= set(read), \
        "the scanner no longer sees services/common/settings.py"
    missing = {name: where for name, where in read.items()
               if name not in env_example and name not in DELIBERATELY_UNSET}
    assert not missing, f"read by the code, absent from .env.example (and ConfigMap/Secrets): {missing}"
    # Built at run time by settings.listen_address and env_secret's table.
    for module in SERVICES:
        assert f"{module.upper()}_PORT" in env_example
    assert set(DEV_SECRETS) <= set(env_example)
