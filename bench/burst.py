"""Burst end to end: N distinct signed webhooks sent as fast as the receiver takes them; time until all are stored.

    .venv/bin/python bench/burst.py --database postgres [--events 20000] [--web-processes 1] [--worker-processes 2]

Baseline in the same run: a bare Starlette endpoint that reads the body and answers 202 (`bench/bare_app.py`,
served with the same uvicorn options), driven by the same wrk for `--baseline-seconds`; its req/s is printed beside
the burst's events/s and the ratio (the target is ≥ 0.15 × the bare endpoint, and ≥ 3,000 events/s).

Then a private Redis (AOF, everysec), the database (a SQLite file or a fresh PostgreSQL database), `synctrack web`
and `synctrack worker`; wrk sends each pre-signed delivery once (32 connections) and then only polls `/healthz`,
while the database is polled for the stored count. The figure is N / (time from the first request until the N-th
event is stored and folded). Worker CPU per event is the worker processes' CPU time over the burst divided by N.
The per-stage breakdown (`bench/stages.py`) follows: p50/p99 of `synctrack_event_latency_seconds` over the burst
(no stream client is connected, so no change is `delivered`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import LUA, OUT, cpu_seconds, machine, running, write_presigned, wrk  # noqa: E402
from bench.ingest import start_redis  # noqa: E402
from bench.stages import breakdown, scrape  # noqa: E402
from bench.sustained import database, start_stack  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.workload import webhook_mix  # noqa: E402
from workers.runtime.db import make_engine  # noqa: E402
from workers.runtime.redis_queues import unfinished  # noqa: E402

NAMESPACE = "synctrack"
UVICORN = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]


def stored_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL")).scalar_one()
        )


def baseline(seconds: int, connections: int, processes: int, presigned: Path) -> float:
    port = free_port()
    argv = ["-m", "uvicorn", "bench.bare_app:app", "--port", str(port), "--workers", str(processes), *UVICORN]
    with running("burst-bare", argv, {}, port):
        return wrk(port, presigned, seconds=seconds, connections=connections).rate


def burst(
    url: str, port: int, presigned: Path, events: int, connections: int, worker_pids: list[int]
) -> dict[str, float]:
    env = {
        **os.environ,
        "PRESIGNED": str(presigned),
        "WRK_THREADS": "1",
        "WRK_CONNECTIONS": str(connections),
        "TARGET_PATH": "/webhooks/codat",
        "ONCE": "1",
    }
    cpu_before = cpu_seconds(worker_pids)
    started = time.monotonic()
    argv = ["wrk", "-t1", f"-c{connections}", "-d300s", "--timeout", "10s", "-s", str(LUA), f"http://127.0.0.1:{port}"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    stored, finished = 0, None
    engine = make_engine(url)
    try:
        while time.monotonic() - started < 300:
            stored = stored_count(engine)
            if os.environ.get("BENCH_DEBUG"):
                print("stored", stored, flush=True)
            if stored >= events:
                finished = time.monotonic()
                break
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
        engine.dispose()
    if finished is None:
        raise SystemExit(f"only {stored} of {events} stored within 300 s")
    seconds = finished - started
    cpu = cpu_seconds(worker_pids) - cpu_before
    return {"seconds": seconds, "rate": events / seconds, "worker_cpu_us": cpu / events * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--web-processes", type=int, default=1)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="threads per worker process (0: the CLI's default)")
    parser.add_argument("--baseline-seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    OUT.mkdir(parents=True, exist_ok=True)
    deliveries = webhook_mix(args.events, companies=500, hot_companies=5, seed=20)
    distinct = len({d.message_id for d in deliveries})
    presigned = OUT / "burst.tsv"
    print(f"machine: {machine()}; database {args.database}; {args.events:,} distinct webhooks", flush=True)
    write_presigned(presigned, deliveries)
    bare = baseline(args.baseline_seconds, args.connections, args.web_processes, presigned)
    print(f"  bare Starlette endpoint: {bare:,.0f} req/s", flush=True)

    # Signed afresh (valid for the next five minutes). The first line is sent twice: wrk asks the script for one
    # request at start-up that it never sends, and a repeat is only answered "duplicate".
    write_presigned(presigned, [deliveries[0], *deliveries])
    redis_proc, redis_port, _ = start_redis("everysec")
    try:
        with database(args.database) as url:
            processes = (args.web_processes, args.worker_processes, args.threads)
            web, worker = start_stack("burst", url, redis_port, *processes)
            port = web.port
            try:
                before = scrape(port)
                result = burst(url, port, presigned, distinct, args.connections, worker.pids)
                stages = breakdown(before, scrape(port))
            finally:
                web.stop()
                worker.stop()
            left = unfinished(redis.Redis(port=redis_port), NAMESPACE).messages
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    print(
        f"  burst: {distinct:,} stored in {result['seconds']:.1f} s = {result['rate']:,.0f} events/s "
        f"({result['rate'] / bare:.2f} x the bare endpoint); worker CPU {result['worker_cpu_us']:.0f} us/event; "
        f"messages left on the queue {left}",
        flush=True,
    )
    print(f"  stages p50/p99: {stages}", flush=True)


if __name__ == "__main__":
    main()
