"""The `synctrack` command: one Typer app, one module per command group, one way to register a command.

Each module of `service/cli/` declares `app = typer.Typer(...)` and decorates its commands with
`@app.command("name")`; `service/cli/main.py` mounts every module's app and nothing else. The command
tree below is the public contract (deploy files, runbooks and scripts name these): commands may be
added, none renamed or dropped, no option lost.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from service.cli import app

cli_main = importlib.import_module("service.cli.main")  # `service.cli.main` is also the entry function

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "service" / "cli"
NOT_COMMANDS = {"__init__", "__main__", "main", "progress"}
"""The package, its entry points, and what commands share (the terminal's console and progress bar)."""

COMMANDS = {
    "db current": [],
    "db upgrade": ["REVISION"],
    "demo": [
        "--action-every",
        "--companies",
        "--database",
        "--failure-rate",
        "--fake-port",
        "--host",
        "--port",
        "--sync-seconds",
        "--traffic-every",
    ],
    "dev": ["--host", "--port", "--threads"],
    "dlq list": ["--limit"],
    "dlq purge": ["--all", "--yes", "IDS"],
    "dlq redrive": ["--all", "IDS"],
    "dlq show": ["IDENT"],
    "fake-codat": [
        "--api-key",
        "--companies",
        "--failure-rate",
        "--host",
        "--port",
        "--receiver-url",
        "--secret",
        "--sync-seconds",
        "--traffic-every",
    ],
    "ledger rebuild": ["--apply", "--into", "--mode", "--order", "--verify", "--yes"],
    "prune": ["--days", "--dry-run"],
    "reconcile": ["--company"],
    "replay": [
        "--all",
        "--company",
        "--connection",
        "--dry-run",
        "--event-id",
        "--event-type",
        "--generated-from",
        "--generated-to",
        "--max-backlog",
        "--outcome",
        "--rate",
        "--received-from",
        "--received-to",
        "--resume",
        "--sample",
        "--wait",
    ],
    "token hash": [],
    "token mint": ["--company", "--rights", "--ttl"],
    "token new": [],
    "web": ["--host", "--port", "--workers"],
    "worker": ["--processes", "--threads"],
}
"""Every command, with its options and arguments (at least these)."""


def command_tree() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        found[" ".join(path)] = sorted(
            opt for p in command.params for opt in (p.opts if p.param_type_name == "option" else [p.name.upper()])
        )

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_keeps_its_name_options_and_arguments() -> None:
    tree = command_tree()
    missing = {path: options for path, options in COMMANDS.items() if not set(options) <= set(tree.get(path, ["-"]))}
    assert missing == {}


def test_main_mounts_the_app_of_every_command_module() -> None:
    modules = {path.stem for path in CLI.glob("*.py")} - NOT_COMMANDS
    mounted = {name for name in modules if getattr(cli_main, name, None) is not None}
    assert mounted == modules
    for name in modules:
        part = getattr(cli_main, name)
        assert isinstance(part.app, typer.Typer), name
        assert any(info.typer_instance is part.app for info in app.registered_groups), name


def test_commands_are_registered_one_way_by_name_on_their_modules_app() -> None:
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                assert node.name != "register", f"{path.name}: commands are declared with @app.command"
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "command":
                        assert getattr(getattr(decorator.func, "value", None), "id", "") == "app", (
                            f"{path.name}: {node.name}"
                        )
                        assert decorator.args and isinstance(decorator.args[0], ast.Constant), (
                            f"{path.name}: {node.name} names its command"
                        )
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_typer":
                assert path.name == "main.py", f"{path.name}: only main.py mounts apps"


def test_the_installed_command_lists_every_top_level_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in {path.split()[0] for path in COMMANDS}:
        assert f" {name} " in result.stdout, name


def test_a_malformed_setting_stops_a_command_at_start_naming_the_variable_and_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "web", "--port", "9"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SYNCTRACK_BUNDLES": "ar=invoices;close"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "synctrack: SYNCTRACK_BUNDLES: Value error, 'close' is not <name>=<data type>,<data type>..., "
        "e.g. ar=invoices,payments"
    )
    assert "Traceback" not in result.stderr + result.stdout
