"""deploy/ stays true to the code: every `synctrack` command line parses against the real CLI, every
SYNCTRACK_* variable is a real setting, every probe path is a real route, and Redis is configured so
that an acknowledged webhook is on disk."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from schemas.settings import Settings
from service.cli import app as cli_app
from tests.support.settings_env import setting_env_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
DEFAULTED = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}")
SYNCTRACK_VAR = re.compile(r"\bSYNCTRACK_[A-Z0-9_]+")


def check_command_line(argv: list[str]) -> None:
    """Parse `argv` with the real typer app (without running it).

    Raises AssertionError for an unknown (sub)command and typer's usage error for a bad option or argument.
    """
    argv = [DEFAULTED.sub(r"\1", token) for token in argv]
    assert argv and argv[0] == "synctrack", f"not a synctrack command: {argv}"
    command: Any = typer.main.get_command(cli_app)
    rest = argv[1:]
    while hasattr(command, "commands"):
        assert rest, f"{argv}: a subcommand is missing"
        name, rest = rest[0], rest[1:]
        assert name in command.commands, f"{argv}: `{name}` is not one of {sorted(command.commands)}"
        command = command.commands[name]
    command.make_context(argv[0], list(rest))


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def synctrack_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("synctrack")
    }


def kubernetes_documents() -> Iterator[dict[str, Any]]:
    for path in KUBERNETES:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield document


def pod_containers() -> Iterator[dict[str, Any]]:
    for document in kubernetes_documents():
        if document["kind"] in ("Deployment", "Job"):
            yield from document["spec"]["template"]["spec"]["containers"]


def app_paths(tmp_path: Path) -> set[str]:
    from service.app import create_app

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", _env_file=None)
    return {getattr(route, "path", "") for route in create_app(settings).routes}


def test_the_command_check_rejects_unknown_commands_and_options() -> None:
    check_command_line(["synctrack", "web", "--port", "8000", "--workers", "2"])
    with pytest.raises(AssertionError):
        check_command_line(["synctrack", "serve"])
    with pytest.raises(typer.TyperException):
        check_command_line(["synctrack", "worker", "--concurrency", "4"])


def test_compose_runs_two_web_and_two_worker_replicas_and_a_migration() -> None:
    services = synctrack_services()
    roles = {name: service["command"][:3] for name, service in services.items()}
    assert roles["migrate"] == ["synctrack", "db", "upgrade"]
    assert roles["web"][:2] == ["synctrack", "web"] and services["web"]["deploy"]["replicas"] == 2
    assert roles["worker"][:2] == ["synctrack", "worker"] and services["worker"]["deploy"]["replicas"] == 2
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_parse_against_the_cli() -> None:
    for service in synctrack_services().values():
        command = service["command"]
        check_command_line(command if isinstance(command, list) else shlex.split(command))


def test_procfile_commands_parse_against_the_cli() -> None:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            check_command_line(shlex.split(line.split(":", 1)[1]))


def test_dockerfile_default_command_parses_against_the_cli() -> None:
    cmd = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1
    check_command_line(yaml.safe_load(cmd[0].removeprefix("CMD ")))


def test_dockerfile_copies_every_package_the_project_installs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    missing = {p for p in packages if f"COPY {p} ./{p}" not in dockerfile}
    assert not missing, f"deploy/Dockerfile does not copy {sorted(missing)}: the image would not install"
    assert "COPY pyproject.toml README.md ./" in dockerfile


def test_compose_passes_only_real_settings_to_synctrack() -> None:
    known = setting_env_names()
    for name, service in synctrack_services().items():
        environment = service["environment"]
        keys = environment if isinstance(environment, list) else list(environment)
        unknown = {key.split("=")[0] for key in keys} - known
        assert not unknown, f"service {name} sets variables Synctrack does not read: {sorted(unknown)}"


def test_every_synctrack_variable_named_in_deploy_files_and_docs_is_a_real_setting() -> None:
    known = setting_env_names()
    files = [COMPOSE, *KUBERNETES, ROOT / "Procfile", DEPLOY / "README.md"]
    named = {var for path in files for var in SYNCTRACK_VAR.findall(path.read_text())}
    assert named, "the deploy files name no SYNCTRACK_ variable at all"
    assert named <= known, f"not settings: {sorted(named - known)}"


def test_kubernetes_config_and_secret_hold_only_real_settings() -> None:
    known = setting_env_names()
    kinds = {}
    for document in kubernetes_documents():
        kinds[document["kind"]] = document
        if document["kind"] in ("ConfigMap", "Secret"):
            keys = set(document.get("data") or {}) | set(document.get("stringData") or {})
            assert keys and keys <= known, f"{document['metadata']['name']}: {sorted(keys - known)}"
    assert {"ConfigMap", "Secret", "Deployment", "Service", "Job"} <= set(kinds)


def test_kubernetes_containers_run_real_commands_with_real_settings() -> None:
    known = setting_env_names()
    roles = set()
    for container in pod_containers():
        argv = [*container.get("command", []), *container.get("args", [])]
        check_command_line(argv)
        roles.add(" ".join(argv[1:3]) if argv[1] == "db" else argv[1])
        names = {env["name"] for env in container.get("env", [])}
        assert names <= known, f"{container['name']}: {sorted(names - known)}"
        refs = {ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref}
        refs |= {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
        assert refs == {"synctrack-config", "synctrack-secrets"}
    assert roles == {"web", "worker", "db upgrade"}


def test_kubernetes_web_probes_use_routes_the_app_serves(tmp_path: Path) -> None:
    paths = app_paths(tmp_path)
    web = next(c for c in pod_containers() if c["name"] == "web")
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= paths
    port_names = {port["name"] for port in web["ports"]}
    assert web["readinessProbe"]["httpGet"]["port"] in port_names


def test_kubernetes_service_selects_the_web_pods() -> None:
    documents = list(kubernetes_documents())
    service = next(d for d in documents if d["kind"] == "Service")
    web = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "synctrack-web")
    labels = web["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_compose_redis_keeps_acknowledged_webhooks_on_disk_and_never_evicts() -> None:
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("always", "everysec")
    assert options["--maxmemory-policy"] == "noeviction"


def test_nginx_logs_no_query_strings_or_referers_which_carry_tokens() -> None:
    import re

    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    formats = dict(re.findall(r"log_format\s+(\w+)\s+(?:escape=\w+\s+)?((?:'[^']*'\s*)+);", code))
    access_logs = re.findall(r"access_log\s+([^;]+);", code)
    assert access_logs, "without an access_log line nginx logs $request (with the query) in its default format"
    for directive in access_logs:
        parts = directive.split()
        assert parts[0] == "off" or (len(parts) > 1 and parts[1] in formats), directive
    for name, text in formats.items():
        for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_", "$http_referer"):
            assert variable not in text + " ", (name, variable)
        assert "$uri" in text
