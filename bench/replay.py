"""Replay of stored events through the real worker path: time to fold them all, events/s, SQLite and
PostgreSQL. Baselines in the same run: enqueueing alone (Redis, no worker), and the fold alone with no
queue (`ledger rebuild` in memory). The replayed ledger is checked against the rebuilt one.

    python bench/replay.py [--events 100000] [--processes 1] [--threads 16]
                           [--postgres postgresql://postgres@127.0.0.1:5432/test] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from bench.harness import machine, start  # noqa: E402
from schemas.ops import ReplayFilters  # noqa: E402
from tests.support.workload import webhook_mix  # noqa: E402
from workers.ledger.tables import WebhookEvent  # noqa: E402
from workers.ops.rebuild import diff_dumps, dump_ledger, fresh_target, rebuild_ledger  # noqa: E402
from workers.ops.replay import ReplayRunner, counter_keys, create_job  # noqa: E402
from workers.runtime.db import make_engine, upgrade  # noqa: E402
from workers.runtime.redis_queues import live_workers  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"


def store_raw(url: str, count: int) -> None:
    """`count` raw events as the receiver would have left them if no worker had run yet."""
    upgrade(url)
    engine = make_engine(url)
    received = datetime.now(UTC)
    rows = [
        {
            "id": d.message_id,
            "event_type": json.loads(d.body).get("eventType", "legacy"),
            "received_at": received,
            "body": d.body,
            "outcome": "pending",
        }
        for d in webhook_mix(count, seed=21)
    ]
    with engine.begin() as conn:
        for start_at in range(0, len(rows), 5_000):
            conn.execute(insert(WebhookEvent.__table__), rows[start_at : start_at + 5_000])  # type: ignore[attr-defined]
    engine.dispose()


def clear(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(f"{namespace}:*", count=5_000))
    for start_at in range(0, len(keys), 5_000):
        client.delete(*keys[start_at : start_at + 5_000])


def enqueue_only(url: str, count: int, client: redis.Redis) -> float:
    namespace = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    engine = make_engine(url)
    job = create_job(engine, ReplayFilters())
    runner = ReplayRunner(engine, client, namespace, rate=0, max_backlog=count + 1)
    started = time.perf_counter()
    runner.run(job.id)
    seconds = time.perf_counter() - started
    clear(client, namespace)
    return seconds


def replay_through_workers(
    url: str, count: int, client: redis.Redis, processes: int, threads: int
) -> tuple[float, float]:
    """(seconds to enqueue everything, seconds until every replayed event was folded)."""
    namespace = f"bench-replay-{uuid.uuid4().hex[:8]}"
    env = {"SYNCTRACK_DATABASE_URL": url, "SYNCTRACK_REDIS_URL": REDIS_URL, "SYNCTRACK_REDIS_NAMESPACE": namespace}
    worker = start(
        "replay-worker", ["-m", "service.cli", "worker", "--processes", str(processes), "--threads", str(threads)], env
    )
    try:
        deadline = time.monotonic() + 60
        while not live_workers(client, namespace) and time.monotonic() < deadline:
            time.sleep(0.2)
        engine = make_engine(url)
        job = create_job(engine, ReplayFilters())
        runner = ReplayRunner(engine, client, namespace, rate=0, max_backlog=20_000)
        started = time.perf_counter()
        runner.run(job.id)
        enqueued = time.perf_counter() - started
        while True:
            folded, dead = (int(v or 0) for v in client.mget(counter_keys(namespace, job.id)))
            if folded + dead >= count:
                break
            if worker.proc.poll() is not None:
                raise RuntimeError(worker.log_path.read_text()[-3000:])
            time.sleep(0.1)
        return enqueued, time.perf_counter() - started
    finally:
        worker.stop()
        clear(client, namespace)


def run(name: str, url: str, args: argparse.Namespace, client: redis.Redis) -> dict[str, float | str]:
    print(f"\n== {name}: {args.events:,} stored events", flush=True)
    store_raw(url, args.events)
    live = make_engine(url)
    target, _ = fresh_target(url)
    report = rebuild_ledger(live, target, mode="memory")
    print(f"baseline, fold alone (ledger rebuild, memory): {report.seconds:.1f} s, {report.events_per_second:,.0f}/s")
    enqueue_seconds = enqueue_only(url, args.events, client)
    print(f"baseline, enqueue alone (no worker): {enqueue_seconds:.1f} s, {args.events / enqueue_seconds:,.0f}/s")
    enqueued, folded = replay_through_workers(url, args.events, client, args.processes, args.threads)
    rate = args.events / folded
    print(
        f"replay through `synctrack worker --processes {args.processes} --threads {args.threads}`: "
        f"enqueued in {enqueued:.1f} s, all folded in {folded:.1f} s = {rate:,.0f} events/s",
        flush=True,
    )
    differences = diff_dumps(dump_ledger(live), dump_ledger(target))
    print(f"replayed ledger vs rebuilt ledger: {len(differences)} differences")
    return {
        "db": name,
        "events": args.events,
        "fold_seconds": folded,
        "events_per_second": rate,
        "rebuild_per_second": report.events_per_second,
        "enqueue_per_second": args.events / enqueue_seconds,
        "differences": len(differences),
    }


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"bench_replay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}")
    client = redis.Redis.from_url(REDIS_URL)
    results = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run("sqlite", f"sqlite:///{tmp}/replay.db", args, client))
    if not args.skip_postgres:
        with postgres_database(args.postgres) as url:
            results.append(run("postgresql", url, args, client))
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
