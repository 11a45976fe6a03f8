"""CPU of an idle stack: `synctrack web --workers 1` and `synctrack worker --processes 2` with no traffic at all.

    .venv/bin/python bench/idle_cpu.py [--seconds 30] [--warmup 10]

Starts a private Redis (AOF, everysec), a fresh PostgreSQL database, the web and the worker processes, waits
`--warmup` seconds (start-up, the periodic jobs' first runs), then measures over `--seconds` of silence: the CPU
cores each group of processes used (user + system time from /proc, every process of the group), its wake-ups per
second per process (voluntary context switches of all its threads), and the Redis server's cores (`INFO`:
`used_cpu_sys` + `used_cpu_user`) and commands per second. The target is at most 0.01 cores in each row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import OUT, cpu_seconds, machine  # noqa: E402
from bench.ingest import start_redis  # noqa: E402
from bench.sustained import database, start_stack  # noqa: E402

TARGET_CORES = 0.01


def switches(pids: list[int]) -> int:
    """Voluntary context switches of every thread of `pids` so far: how often a thread blocked (and was woken)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches"))
    return total


def redis_cpu(client: redis.Redis) -> tuple[float, int]:
    """(CPU seconds the Redis server used so far, commands it processed so far)."""
    cpu: dict[str, float] = client.info("cpu")
    stats: dict[str, int] = client.info("stats")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), int(stats["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the idle measurement")
    parser.add_argument("--warmup", type=float, default=10.0, help="idle time before measuring")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; PostgreSQL; {args.seconds:g} s idle after {args.warmup:g} s warm-up", flush=True)
    redis_proc, redis_port, redis_dir = start_redis("everysec")
    client = redis.Redis(port=redis_port)
    try:
        with database("postgres") as url:
            web, worker = start_stack("idle", url, redis_port, web_processes=1, worker_processes=2, threads=0)
            try:
                time.sleep(args.warmup)
                groups = {"web (--workers 1)": web.pids, "worker (--processes 2)": worker.pids}
                before = {name: (cpu_seconds(pids), switches(pids)) for name, pids in groups.items()}
                redis_before = redis_cpu(client)
                started = time.monotonic()
                time.sleep(args.seconds)
                elapsed = time.monotonic() - started
                after = {name: (cpu_seconds(pids), switches(pids)) for name, pids in groups.items()}
                redis_after = redis_cpu(client)
            finally:
                web.stop()
                worker.stop()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(redis_dir, ignore_errors=True)

    print(f"| processes | count | cores | wake-ups/s per process | target ≤ {TARGET_CORES} cores |")
    print("|---|---|---|---|---|")
    for name, pids in groups.items():
        cores = (after[name][0] - before[name][0]) / elapsed
        wakeups = (after[name][1] - before[name][1]) / elapsed / max(1, len(pids))
        verdict = "met" if cores <= TARGET_CORES else "missed"
        print(f"| {name} | {len(pids)} | {cores:.4f} | {wakeups:.1f} | {verdict} |")
    cores = (redis_after[0] - redis_before[0]) / elapsed
    commands = (redis_after[1] - redis_before[1]) / elapsed
    verdict = "met" if cores <= TARGET_CORES else "missed"
    print(f"| redis-server ({commands:.1f} commands/s) | 1 | {cores:.4f} | | {verdict} |")


if __name__ == "__main__":
    main()
