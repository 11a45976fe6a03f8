"""Sustained end to end: the highest arrival rate the whole system holds, and whether its memory stays flat.

    .venv/bin/python bench/sustained.py --database sqlite --rates 500,1000,2000 [--seconds 60]
    .venv/bin/python bench/sustained.py --database postgres --soak-minutes 10 --rates 500

Starts a private Redis (AOF, everysec), the database (a SQLite file or a fresh PostgreSQL database),
`synctrack web` and `synctrack worker`, then offers each rate with wrk (paced, pre-signed deliveries,
each a distinct message id) for `--seconds`. A rate is *held* when wrk achieved it (within 2 %) with no
error and the backlog (messages not yet acknowledged by a worker) is back to zero within 5 s after the
last request. Rates are tried in order and the run stops at the first one not held. `--soak-minutes`
samples the RSS of the web and worker processes every 30 s at the first rate instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import OUT, ROOT, Server, cpu_seconds, machine, rss_mib, start, wrk  # noqa: E402
from bench.ingest import start_redis  # noqa: E402
from tests.support.builders import SECRET  # noqa: E402
from tests.support.services import free_port, fresh_postgres_database  # noqa: E402
from tests.support.workload import Delivery, signed, webhook_mix  # noqa: E402
from workers.runtime.redis_queues import unfinished  # noqa: E402

NAMESPACE = "synctrack"
DRAIN_LIMIT_SECONDS = 5.0


@dataclass
class Attempt:
    rate: float
    achieved: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    drain_seconds: float = float("inf")
    peak_backlog: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return self.achieved >= 0.98 * self.rate and not self.errors and self.drain_seconds <= DRAIN_LIMIT_SECONDS


def write_paced(path: Path, deliveries: list[Delivery], rate: float) -> None:
    """Delivery i is signed for the moment it is due (start + i/rate): fresh however long the run."""
    start = time.time() + 2
    with path.open("w") as out:
        for i, delivery in enumerate(deliveries):
            h = signed(delivery, timestamp=start + i / rate)
            out.write(f"{h['webhook-id']}\t{h['webhook-timestamp']}\t{h['webhook-signature']}\t{delivery.body}\n")


def backlog(client: redis.Redis) -> int:
    return unfinished(client, NAMESPACE).messages


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgres":
        with fresh_postgres_database() as url:
            yield url
    else:
        path = OUT / "sustained.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"


def start_stack(
    name: str, url: str, redis_port: int, web_processes: int, worker_processes: int, threads: int
) -> tuple[Server, Server]:
    """Migrate the database, then start `synctrack web` and `synctrack worker` on it and the given Redis; return
    them once the web answers and the workers had a moment to boot. `threads` 0 keeps the CLI's default."""
    env = {
        "SYNCTRACK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SYNCTRACK_REDIS_NAMESPACE": NAMESPACE,
        "SYNCTRACK_DATABASE_URL": url,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_LIVE_WINDOW": "0",  # the workload is dated weeks ago: these runs measure the live lane
        "SYNCTRACK_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    }
    upgrade = [sys.executable, "-m", "service.cli", "db", "upgrade"]
    subprocess.run(upgrade, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True, cwd=OUT)
    port = free_port()
    web_argv = ["-m", "service.cli", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(web_processes)]
    web = start(f"{name}-web", web_argv, env, port)
    worker_argv = ["-m", "service.cli", "worker", "--processes", str(worker_processes)]
    worker = start(f"{name}-worker", [*worker_argv, *(["--threads", str(threads)] if threads else [])], env)
    time.sleep(4)
    return web, worker


def offer(rate: float, seconds: int, web: Server, worker: Server, redis_pid: int, client: redis.Redis) -> Attempt:
    attempt = Attempt(rate)
    deliveries = webhook_mix(int(rate * seconds * 1.1) + 100, companies=500, hot_companies=5, seed=int(rate))
    presigned = OUT / "sustained.tsv"
    write_paced(presigned, deliveries, rate)
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], backlog(client))
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    groups = {"web": web.pids, "worker": worker.pids, "redis": [redis_pid]}
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    connections = max(8, min(256, int(rate / 50)))
    run = wrk(web.port, presigned, seconds=seconds, connections=connections, rate=rate)
    ended = time.monotonic()
    attempt.cpu = {name: (cpu_seconds(pids) - before[name]) / run.seconds for name, pids in groups.items()}
    attempt.cpu["wrk"] = run.wrk_cpu_share
    attempt.achieved, attempt.errors = run.rate, run.errors
    while time.monotonic() - ended < 120:
        if backlog(client) == 0:
            attempt.drain_seconds = time.monotonic() - ended
            break
        time.sleep(0.1)
    stop.set()
    watcher.join()
    attempt.peak_backlog = peak[0]
    return attempt


def soak(minutes: float, rate: float, web: Server, worker: Server, client: redis.Redis) -> None:
    deliveries = webhook_mix(int(rate * minutes * 60 * 1.05) + 100, companies=2000, hot_companies=5, seed=7)
    presigned = OUT / "soak.tsv"
    write_paced(presigned, deliveries, rate)
    samples: list[tuple[float, float, float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(30):
            row = (time.monotonic() - started, rss_mib(web.pids), rss_mib(worker.pids), backlog(client))
            samples.append(row)
            print(f"  t={row[0]:5.0f}s  web RSS {row[1]:7.1f} MiB  worker RSS {row[2]:7.1f} MiB  backlog {row[3]}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = wrk(web.port, presigned, seconds=int(minutes * 60), connections=16, rate=rate)
    stop.set()
    sampler.join()
    print(f"  offered {rate:,.0f}/s, achieved {run.rate:,.0f}/s, errors {run.errors or 'none'}")
    settled = [s for s in samples if s[0] >= 60] or samples
    if settled:
        first, last = settled[0], settled[-1]
        for index, name in ((1, "web"), (2, "worker")):
            growth = (last[index] - first[index]) / first[index] * 100
            print(f"  {name} RSS {first[index]:.1f} -> {last[index]:.1f} MiB after the first minute ({growth:+.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rates", default="500,1000,1500,2000,3000", help="arrival rates to try, in order")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--web-processes", type=int, default=1)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="threads per worker process (0: the CLI's default)")
    parser.add_argument("--soak-minutes", type=float, default=0.0)
    parser.add_argument("--profile-worker", type=float, default=0.0, help="py-spy the worker for N seconds")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    redis_proc, redis_port, _ = start_redis("everysec")
    client = redis.Redis(port=redis_port)
    print(
        f"machine: {machine()}; database {args.database}; web processes {args.web_processes}; "
        f"worker processes {args.worker_processes} x {args.threads or 'default'} threads",
        flush=True,
    )
    try:
        with database(args.database) as url:
            web, worker = start_stack(
                "sustained", url, redis_port, args.web_processes, args.worker_processes, args.threads
            )
            try:
                rates = [float(r) for r in args.rates.split(",")]
                if args.soak_minutes:
                    soak(args.soak_minutes, rates[0], web, worker, client)
                    return
                for rate in rates:
                    profiler = None
                    if args.profile_worker:
                        profiler = subprocess.Popen(
                            [str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses", "-p",
                             str(worker.proc.pid), "-d", str(args.profile_worker), "-r", "100", "-f", "raw",
                             "-o", str(OUT / f"worker-{args.database}-{rate:.0f}.folded")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    attempt = offer(rate, args.seconds, web, worker, redis_proc.pid, client)
                    if profiler is not None:
                        profiler.wait()
                    cpu = "  ".join(f"{name} {share:.2f}" for name, share in attempt.cpu.items())
                    print(
                        f"  offered {rate:6,.0f}/s  achieved {attempt.achieved:6,.0f}/s  peak backlog "
                        f"{attempt.peak_backlog:7,}  drained in {attempt.drain_seconds:6.1f} s  "
                        f"{'HELD' if attempt.held else 'NOT HELD'}  cpu[{cpu}]"
                        + (f"  errors {attempt.errors}" if attempt.errors else ""),
                        flush=True,
                    )
                    if not attempt.held:
                        break
            finally:
                web.stop()
                worker.stop()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


if __name__ == "__main__":
    main()
