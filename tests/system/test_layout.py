"""The package layout's rules, checked the way CI checks them: `lint-imports` against `.importlinter`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_import_contract_is_kept() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_names_a_file_outside_the_repository() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for top in ("service", "workers", "schemas", "fakecodat")
        for path in (ROOT / top).rglob("*.py")
        if "DESIGN.md" in path.read_text()
    ]
    assert offenders == []


def test_ruff_finds_nothing_to_lint_or_reformat() -> None:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    for check in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = subprocess.run([exe, *check], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


DRAMATIQ_INTERNALS = (
    *("__acks__", "__heartbeats__", ".msgs", ".XQ", ".DQ", "redis_message_id"),
    *(".consumers", "_RedisConsumer", "_should_do_maintenance"),
    *("outstanding_message_count", "do_fetch", "message_cache"),
)
"""dramatiq's Redis key layout, private names and consumer tuning (how a queue is fetched: the doorbell, the
backfill lane's share): what only `workers/runtime/redis_queues.py` may spell out."""


def test_only_the_queue_module_names_dramatiqs_redis_keys_and_private_attributes() -> None:
    owner = ROOT / "workers" / "runtime" / "redis_queues.py"
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for top in ("service", "workers", "schemas", "fakecodat", "tests", "bench")
        for path in (ROOT / top).rglob("*.py")
        if path not in (owner, Path(__file__).resolve())
        for name in DRAMATIQ_INTERNALS
        if name in path.read_text()
    )
    assert offenders == []
