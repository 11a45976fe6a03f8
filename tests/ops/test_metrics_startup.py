"""Web and worker processes started at the same moment all come up, though each one clears the shared
metrics directory of dead processes' files as it starts (the Procfile, compose and Kubernetes start
them together). Real `synctrack web` and `synctrack worker` processes, several at once, repeatedly,
over a directory full of files left by processes that no longer exist.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.auth import AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import ServiceProcess, free_port, run_db_upgrade, wait_until_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

ROUNDS = 3
WEBS = 2
WORKERS = 2
DEAD_PROCESSES = 1500
"""Left-over files of this many dead processes: enough that the processes' clean-ups overlap."""
KINDS = ("counter", "histogram", "gauge_livesum", "gauge_max")


def leave_dead_processes_files(directory: Path) -> None:
    # pids above the kernel's pid_max never belong to a live process
    for pid in range(4_200_000, 4_200_000 + DEAD_PROCESSES):
        for kind in KINDS:
            (directory / f"{kind}_{pid}.db").write_bytes(b"")


def test_several_web_and_worker_processes_starting_at_once_all_come_up(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **AUTH_ENV,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_SUBSCRIPTIONS_DISPATCHER": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    for round_ in range(ROUNDS):
        leave_dead_processes_files(metrics_dir)
        ports = [free_port() for _ in range(WEBS)]
        with ExitStack() as stack:
            started: list[ServiceProcess] = []
            for n, port in enumerate(ports):
                args = ["web", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
                started.append(ServiceProcess(args, env, tmp_path, f"web-{round_}-{n}"))
            for n in range(WORKERS):
                args = ["worker", "--processes", "1", "--threads", "1"]
                started.append(ServiceProcess(args, env, tmp_path, f"worker-{round_}-{n}"))
            for process in started:
                stack.callback(process.stop)
            for port, web in zip(ports, started, strict=False):
                wait_until_healthy(f"http://127.0.0.1:{port}", web, timeout=90)
            time.sleep(2)  # the workers have passed their start-up by now
            for process in started:
                assert process.proc.poll() is None, f"{process.log_path.name} exited:\n{process.output()[-3000:]}"
                assert "Traceback" not in process.output(), process.output()[-3000:]
        leftovers = [p.name for p in metrics_dir.iterdir() if p.name.split("_")[-1].startswith("42")]
        assert leftovers == [], f"round {round_}: files of dead processes were left: {leftovers[:5]}"


def test_clean_ups_racing_over_the_same_dead_files_all_succeed(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from workers.runtime.metrics import forget_dead_processes

    for attempt in range(2):
        leave_dead_processes_files(tmp_path)
        with ThreadPoolExecutor(8) as pool:
            runs = [pool.submit(forget_dead_processes, str(tmp_path), everything=True) for _ in range(8)]
            assert all(run.result() >= 0 for run in runs), f"attempt {attempt}"
        assert list(tmp_path.iterdir()) == []
