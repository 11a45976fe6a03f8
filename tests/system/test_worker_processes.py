"""`synctrack worker` as a process tree: its children are restarted when they die, stop when it is told to
stop, and stop by themselves when it is killed outright (nothing is left polling the queue); idle, they wait
on Redis and use next to no CPU."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.services import ServiceProcess, run_db_upgrade, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and "spawn_main" in (entry / "cmdline").read_text(errors="replace"):
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_worker(tmp_path: Path, redis_url: str, namespace: str) -> ServiceProcess:
    """`synctrack worker --processes 2` on a fresh SQLite ledger and the real Redis."""
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    return ServiceProcess(["worker", "--processes", "2", "--threads", "2"], env, tmp_path, "worker")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def two_children(worker: ServiceProcess) -> set[int] | None:
    found = children_of(worker.proc.pid)
    return found if len(found) == 2 else None


def test_a_dead_child_is_replaced_and_a_killed_supervisor_leaves_no_child_behind(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    worker = start_worker(tmp_path, redis_url, namespace)
    try:
        first = wait_for(lambda: two_children(worker), 60)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(
            lambda: (lambda c: c if len(c) == 2 and victim not in c else None)(children_of(worker.proc.pid)), 60
        )
        assert len(replaced & first) == 1

        os.kill(worker.proc.pid, signal.SIGKILL)  # the supervisor alone, as an OOM kill would
        worker.proc.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in replaced), 60, message="orphaned children stopping")
    finally:
        worker.stop(signal.SIGKILL)


def test_sigterm_stops_every_child_and_the_supervisor_exits_cleanly(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    worker = start_worker(tmp_path, redis_url, namespace)
    try:
        children = wait_for(lambda: two_children(worker), 60)
        wait_for(lambda: worker.output().count("result=ready") == 2, 60, message="both children ready")
        os.kill(worker.proc.pid, signal.SIGTERM)
        assert worker.proc.wait(60) == 0
        assert not any(alive(pid) for pid in children)
    finally:
        worker.stop(signal.SIGKILL)


IDLE_CORES = 0.02
"""Most CPU an idle worker process may use, in cores: its threads wake about once a second, not dozens of times."""


def test_an_idle_worker_process_uses_next_to_no_cpu(tmp_path: Path, redis_url: str, namespace: str) -> None:
    worker = start_worker(tmp_path, redis_url, namespace)
    try:
        children = wait_for(lambda: two_children(worker), 60)
        wait_for(lambda: worker.output().count("result=ready") == 2, 60, message="both children ready")
        time.sleep(2)  # past start-up
        before, started = {pid: cpu_seconds(pid) for pid in children}, time.monotonic()
        time.sleep(6)
        elapsed = time.monotonic() - started
        cores = {pid: (cpu_seconds(pid) - used) / elapsed for pid, used in before.items()}
    finally:
        worker.stop(signal.SIGKILL)
    assert max(cores.values()) < IDLE_CORES, cores
