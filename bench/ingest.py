"""Ingest benchmark: Synctrack's receiver against a bare Starlette endpoint, same run, same process count.

    .venv/bin/python bench/ingest.py [--seconds 10] [--processes 1] [--appendfsync everysec]

(a) `bench/bare_app.py`: read the body, answer 202. (b) Synctrack's receiver: Svix verification,
de-duplication and durable enqueue on a real Redis (a private `redis-server` with AOF on, started
here). Both are driven by wrk with pre-signed requests, each a distinct message id signed just before
the run; then both get a fixed 1,000 req/s from an open-loop generator (bench/openloop.py) for p50/p99.
Each is run on uvicorn's pure-Python stack (asyncio + h11) and its compiled one (uvloop + httptools);
the receiver also as `synctrack web` ships (uvicorn's "auto" choice).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import OUT, WrkRun, cpu_seconds, machine, running, write_presigned, wrk  # noqa: E402
from bench.openloop import FixedRateResult, raw_request, run_fixed_rate  # noqa: E402
from tests.support.builders import SECRET  # noqa: E402
from tests.support.services import free_port  # noqa: E402
from tests.support.workload import Delivery, signed, webhook_mix  # noqa: E402

FIXED_RATE = 1000.0


@dataclass
class Variant:
    name: str
    receiver: bool
    argv: list[str]


def variants(processes: int) -> list[Variant]:
    def uvicorn(target: str, loop: str, http: str) -> list[str]:
        return ["-m", "uvicorn", target, "--host", "127.0.0.1", "--workers", str(processes), "--loop", loop]

    found = []
    for loop, http in (("asyncio", "h11"), ("uvloop", "httptools")):
        tail = ["--http", http, "--log-level", "warning", "--no-access-log"]
        found.append(Variant(f"bare {loop}+{http}", False, [*uvicorn("bench.bare_app:app", loop, http), *tail]))
        found.append(Variant(f"receiver {loop}+{http}", True, [*uvicorn("service.asgi:app", loop, http), *tail]))
    shipped = ["-m", "service.cli", "web", "--host", "127.0.0.1", "--workers", str(processes)]
    found.append(Variant("receiver, `synctrack web` as shipped", True, shipped))
    return found


def start_redis(appendfsync: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="synctrack-bench-redis-"))
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", appendfsync, "--maxmemory-policy", "noeviction"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(50):
        try:
            client.ping()
            return proc, port, data
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def fixed_rate_requests(deliveries: list[Delivery], port: int) -> list[bytes]:
    return [raw_request(f"127.0.0.1:{port}", "/webhooks/codat", signed(d), d.body.encode()) for d in deliveries]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1, help="uvicorn processes per server")
    parser.add_argument("--fixed-seconds", type=int, default=10, help="duration of the 1,000 req/s run")
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--only", default="", help="run only the variants whose name contains this")
    parser.add_argument("--deliveries", type=int, default=0, help="pre-signed requests per wrk run (0: auto)")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    redis_proc, redis_port, redis_dir = start_redis(args.appendfsync)
    client = redis.Redis(port=redis_port)
    database = OUT / "ingest.db"
    database.unlink(missing_ok=True)
    env = {
        "SYNCTRACK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{database}",
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_LIVE_WINDOW": "0",  # the workload is dated weeks ago: these runs measure the live lane
        "SYNCTRACK_LOG_LEVEL": "WARNING",
    }
    subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], env={**env}, check=True, cwd=OUT)

    per_run = args.deliveries or 25_000 * args.seconds * args.processes
    print(f"machine: {machine()}; redis appendonly yes appendfsync {args.appendfsync}")
    print(f"building {per_run:,} distinct deliveries per run ...", flush=True)
    pool = webhook_mix(per_run + 2_000 + int(FIXED_RATE * args.fixed_seconds), companies=200, seed=1)
    warmup, main_set, fixed = pool[:2_000], pool[2_000 : 2_000 + per_run], pool[2_000 + per_run :]

    results: dict[str, tuple[WrkRun, float, int]] = {}
    latencies: dict[str, FixedRateResult] = {}
    cpu_per_request: dict[str, float] = {}
    try:
        for variant in variants(args.processes):
            if args.only not in variant.name:
                continue
            client.flushall()
            port = free_port()
            argv = [*variant.argv, "--port", str(port)]
            with running(variant.name.split(",")[0].replace(" ", "-"), argv, env, port) as server:
                warm_file, main_file = OUT / "warmup.tsv", OUT / "presigned.tsv"
                write_presigned(warm_file, warmup)
                wrk(port, warm_file, seconds=2, connections=args.connections)
                client.flushall()
                write_presigned(main_file, main_set)
                cpu_before = cpu_seconds(server.pids)
                run = wrk(port, main_file, seconds=args.seconds, connections=args.connections)
                server_cpu_seconds = cpu_seconds(server.pids) - cpu_before
                server_cpu = server_cpu_seconds / run.seconds
                cpu_per_request[variant.name] = server_cpu_seconds / max(1, run.requests)
                queued = int(client.llen("synctrack:webhooks")) if variant.receiver else -1
                results[variant.name] = (run, server_cpu, queued)
                print(
                    f"  {variant.name:44s} {run.rate:9,.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms"
                    f"  server cpu {server_cpu:4.2f} ({cpu_per_request[variant.name] * 1e6:5.0f} us/req)"
                    f"  wrk cpu {run.wrk_cpu_share:4.2f}  load {os.getloadavg()[0]:.1f}"
                    + (f"  queued {queued:,}" if variant.receiver else "")
                    + (f"  errors {run.errors}" if run.errors else "")
                    + (f"  WRAPPED x{run.wrapped} (ids repeated)" if run.wrapped else ""),
                    flush=True,
                )
                if "uvloop" in variant.name or "shipped" in variant.name:
                    client.flushall()
                    requests = fixed_rate_requests(fixed, port)
                    result = run_fixed_rate("127.0.0.1", port, requests, FIXED_RATE)
                    latencies[variant.name] = result
                    print(
                        f"  {'':44s} at {FIXED_RATE:,.0f} req/s: p50 {result.percentile(50):.2f} ms"
                        f"  p99 {result.percentile(99):.2f} ms  max {max(result.latencies_ms):.2f} ms"
                        f"  statuses {result.statuses}  errors {result.errors}  late sends {result.late_sends}"
                        f"  connections {result.connections}",
                        flush=True,
                    )
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(redis_dir, ignore_errors=True)

    print("\nratios (receiver / bare, same loop and parser):")
    pairs = [(f"receiver {stack}", f"bare {stack}") for stack in ("asyncio+h11", "uvloop+httptools")]
    pairs.append(("receiver, `synctrack web` as shipped", "bare uvloop+httptools"))
    for receiver_name, bare_name in pairs:
        if receiver_name in results and bare_name in results:
            receiver, bare = results[receiver_name][0], results[bare_name][0]
            by_cpu = cpu_per_request[bare_name] / cpu_per_request[receiver_name]
            print(
                f"  {receiver_name:44s} {receiver.rate:9,.0f} / {bare.rate:9,.0f} = {receiver.rate / bare.rate:.2f}"
                f"   by CPU per request: {by_cpu:.2f}"
            )
    print("targets: ratio >= 0.5, p99 <= 5 ms at 1,000 req/s")
    print("(CPU per request does not depend on what else the machine runs; req/s and latency do: see `load`.)")


if __name__ == "__main__":
    main()
