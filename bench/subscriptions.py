"""Outbound subscriptions: events/s delivered to a local receiver with 10 subscriptions.

    .venv/bin/python bench/subscriptions.py [--events 400] [--subscriptions 10] [--processes 2] [--threads 8]
                                            [--database-url postgresql://postgres@127.0.0.1:5432/test] [--sustained]
                                            [--baseline-runs 3] [--shaped]

Needs the real Redis (SYNCTRACK_TEST_REDIS_URL, default redis://127.0.0.1:6379/0). Runs a real
`synctrack worker` (dispatcher thread + `deliver_webhook` actors) against SQLite in bench/out (or the
given PostgreSQL), a local uvicorn receiver that verifies every signature with `svix`, and every
subscription matching every event. The events are XADDed straight onto the change stream, so the figure
is the subscription path alone: dispatch (consumer group, delivery rows, queue) + one signed POST per
(event, subscription) + its bookkeeping.

Baseline, same run: the same receiver fed directly by as many client threads as the worker has
(signed POSTs over keep-alive connections): the most this receiver and client concurrency allow; the median
of `--baseline-runs` bursts of 4,000 POSTs taken before the pipeline and as many after it (one burst lasts about
a second and swings by a third from one to the next on a shared machine, and the machine's own speed drifts
over a run: a baseline taken only before the pipeline may be measured on a faster or slower machine than the
pipeline was; each burst is printed), and with `--sustained` also as many POSTs as the pipeline makes. That
client is this one process, whose threads share one interpreter lock: `--shaped` also measures one shaped like
the worker (`--processes` client processes of `--threads` threads each), before and after the pipeline too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import Session  # noqa: E402

from bench.harness import OUT, cpu_seconds, machine, named_pids, running  # noqa: E402
from tests.support.services import REDIS_URL, free_port  # noqa: E402
from workers.ledger.changes import stream_key  # noqa: E402
from workers.ledger.tables import Subscription  # noqa: E402
from workers.outbound.dispatch import event_body  # noqa: E402
from workers.outbound.signing import new_secret, webhook_headers  # noqa: E402
from workers.outbound.transport import Destinations  # noqa: E402
from workers.runtime.db import make_engine, upgrade  # noqa: E402


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


def counts(observer: httpx.Client) -> dict[str, int]:
    """The receiver's tally, asked over one kept-alive client: the pipeline is polled every 50 ms while it
    runs, and `httpx.get` builds a client (and its TLS context) per call, about 50 ms of CPU each, which took
    a quarter of this machine's two cores away from the pipeline it measured."""
    result: dict[str, int] = observer.get("/count").json()
    return result


def change_fields(i: int) -> dict[str, str]:
    data: dict[str, Any] = {
        "id": f"sync-{i}",
        "company_id": f"company-{i % 50}",
        "connection_id": f"conn-{i % 200}",
        "data_type": "invoices",
        "status": "Complete",
        "phase": "succeeded",
        "requested_at": "2026-11-25T10:00:00Z",
        "completed_at": "2026-11-25T10:01:00Z",
        "records_modified": True,
        "issues": None,
        "source": "webhook",
        "event_id": f"evt-{i}",
    }
    return {
        "event": "sync.completed",
        "company_id": str(data["company_id"]),
        "connection_id": str(data["connection_id"]),
        "data": json.dumps(data),
    }


class Cpu:
    """CPU seconds of the parts of a run, so that each figure can say where the two cores went: this script
    (the baseline's client), the receiver, the worker, and a local PostgreSQL's and Redis's server processes.

    Each part is a function giving its processes now, or None for this script; a process that starts during
    the run (a PostgreSQL backend for a new pooled connection) counts from zero."""

    def __init__(self, **parts: Callable[[], list[int]] | None) -> None:
        self.parts = parts
        self.started = time.monotonic()
        self.before = {name: self._seconds(name) for name in parts}

    def _seconds(self, name: str) -> dict[int, float]:
        processes = self.parts[name]
        if processes is None:
            return {0: time.process_time()}
        return {pid: cpu_seconds([pid]) for pid in processes()}

    def seconds(self) -> dict[str, float]:
        """CPU seconds each part used since this was made."""
        used = {}
        for name in self.parts:
            before = self.before[name]
            used[name] = sum(seconds - before.get(pid, 0.0) for pid, seconds in self._seconds(name).items())
        return used

    def cores(self) -> dict[str, float]:
        """Cores each part used since this was made."""
        elapsed = time.monotonic() - self.started
        return {name: seconds / elapsed for name, seconds in self.seconds().items()}


@dataclass
class Baselines:
    """One round of the baseline: its bursts with the cores each used, and the shaped baseline if asked."""

    bursts: list[float] = field(default_factory=list)
    burst_cores: list[dict[str, float]] = field(default_factory=list)
    shaped: float = 0.0
    shaped_cores: dict[str, float] = field(default_factory=dict)


def split(cores: dict[str, float], rate: float) -> str:
    return ", ".join(f"{name} {used:.2f} cores ({used / rate * 1000:.2f} ms each)" for name, used in cores.items())


def baseline(base: str, secrets: dict[str, str], total: int, threads: int) -> float:
    """Signed POSTs straight to the receiver, `threads` at a time: deliveries/s.

    Sent with the workers' own HTTP client (`workers/outbound/transport.py`, kept-alive connections),
    so the baseline is what this receiver and this client concurrency allow, and the pipeline's share of it is
    what dispatch, claims, signing and the delivery log cost on top."""
    paths = list(secrets)
    destinations = Destinations(allow_http=True, allow_private=True)

    def post(i: int) -> int:
        path = paths[i % len(paths)]
        body = event_body(f"{i}-0", "sync.completed", datetime.now(UTC), json.loads(change_fields(i)["data"]))
        headers = webhook_headers(f"msg_base_{i}", datetime.now(UTC), body, [secrets[path]])
        return destinations.post(f"{base}{path}", headers.items(), body.encode(), 15, 65_536)

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as executor:
        statuses = list(executor.map(post, range(total)))
    elapsed = time.monotonic() - started
    destinations.close()
    assert set(statuses) == {204}, set(statuses)
    return total / elapsed


def shaped_baseline(
    base: str, secrets: dict[str, str], total: int, processes: int, threads: int
) -> tuple[float, float]:
    """`baseline` from `processes` client processes of `threads` threads each, the worker's own shape:
    (deliveries/s, the client processes' CPU seconds, 50 warm-up POSTs each included). One client process
    never gets past one core (its threads share one interpreter lock); this is what the receiver allows a
    client shaped like the worker."""
    before, share = os.times(), total // processes
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as executor:

        def each(posts: int) -> None:
            list(
                executor.map(
                    baseline, [base] * processes, [secrets] * processes, [posts] * processes, [threads] * processes
                )
            )

        each(50)  # the processes started
        started = time.monotonic()
        each(share)
        rate = share * processes / (time.monotonic() - started)
    after = os.times()  # the client processes have exited: their CPU is counted as this process's children's
    return rate, after.children_user + after.children_system - before.children_user - before.children_system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--database-url", default="")
    parser.add_argument(
        "--sustained", action="store_true", help="also measure a baseline of as many POSTs as the pipeline makes"
    )
    parser.add_argument(
        "--shaped",
        action="store_true",
        help="also measure a baseline from as many client processes and threads as the worker has",
    )
    parser.add_argument(
        "--baseline-runs", type=int, default=3, help="bursts of 4,000 POSTs; their median is the baseline"
    )
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    namespace = f"bench-subs-{uuid.uuid4().hex[:8]}"
    database_url = args.database_url or f"sqlite:///{OUT / 'subscriptions.db'}"
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    upgrade(database_url)
    engine = make_engine(database_url)
    receiver_port = free_port()
    secrets = {f"/hook/{n}": new_secret() for n in range(args.subscriptions)}
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.exec(Subscription.__table__.delete())  # type: ignore[attr-defined]
        for path, secret in secrets.items():
            url = f"http://127.0.0.1:{receiver_port}{path}"
            session.add(
                Subscription(
                    id=f"sub_{uuid.uuid4().hex}",
                    url=url,
                    event_types=["*"],
                    secret=secret,
                    created_at=now,
                    updated_at=now,
                )
            )
    if engine.dialect.name == "postgresql":
        # The old subscriptions' deliveries were just deleted (cascade), and the earlier runs updated each row
        # three times. A production PostgreSQL runs autovacuum; a test one may not (`SHOW autovacuum`), and
        # without this every run would measure the dead rows of all the runs before it.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE deliveries, subscriptions")
    engine.dispose()
    total = args.events * args.subscriptions
    env = {
        "SYNCTRACK_DATABASE_URL": database_url,
        "SYNCTRACK_REDIS_URL": REDIS_URL,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_SUBSCRIPTIONS_ALLOW_HTTP": "true",
        "SYNCTRACK_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
        "SYNCTRACK_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(OUT / f"metrics-{namespace}"),
        "RECEIVER_SECRETS": json.dumps(secrets),
    }
    client = redis.Redis.from_url(REDIS_URL)
    receiver_argv = [
        "-m",
        "uvicorn",
        "bench.subscription_receiver:app",
        "--port",
        str(receiver_port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    try:
        base = f"http://127.0.0.1:{receiver_port}"
        with (
            running("subscription-receiver", receiver_argv, env) as receiver,
            httpx.Client(base_url=base, timeout=5) as observer,
        ):
            wait_http(f"{base}/count")
            threads = args.processes * args.threads

            def baselines() -> Baselines:
                """The bursts (and the shaped baseline): taken before the pipeline and again after it."""
                found = Baselines()
                for _ in range(args.baseline_runs):
                    cpu = Cpu(client=None, receiver=lambda: receiver.pids)
                    found.bursts.append(baseline(base, secrets, min(total, 4000), threads))
                    found.burst_cores.append(cpu.cores())
                if args.shaped:
                    cpu, started = Cpu(receiver=lambda: receiver.pids), time.monotonic()
                    found.shaped, client_seconds = shaped_baseline(
                        base, secrets, 4000 * args.processes, args.processes, args.threads
                    )
                    found.shaped_cores = {"clients": client_seconds / (time.monotonic() - started), **cpu.cores()}
                return found

            early = baselines()
            # As many POSTs as the pipeline makes: a burst of 4,000 lasts about a second, and its rate swings
            # by a third from run to run on a shared machine; this one lasts as long as the pipeline does.
            sustained = baseline(base, secrets, total, threads) if args.sustained else None
            seen = counts(observer)
            before = seen["ok"]
            worker_argv = ["-m", "service.cli", "worker"]
            worker_argv += ["--processes", str(args.processes), "--threads", str(args.threads)]
            with running("subscription-worker", worker_argv, env) as worker:
                deadline = time.monotonic() + 60
                while not any(g["name"] == b"subscriptions" for g in _groups(client, namespace)):
                    if time.monotonic() > deadline:
                        raise TimeoutError(worker.log_path.read_text()[-3000:])
                    time.sleep(0.2)
                time.sleep(1.0)  # every worker process up
                local_pg = engine.dialect.name == "postgresql" and engine.url.host in ("127.0.0.1", "localhost")
                parts = {"worker": lambda: worker.pids, "receiver": lambda: receiver.pids, "this script": None}
                if local_pg:
                    parts["postgresql"] = partial(named_pids, "postgres")
                if client.connection_pool.connection_kwargs.get("host") in ("127.0.0.1", "localhost"):
                    parts["redis"] = partial(named_pids, "redis-server")
                pipeline_cpu = Cpu(**parts)
                started = time.monotonic()
                pipe = client.pipeline(transaction=False)
                for i in range(args.events):
                    pipe.xadd(stream_key(namespace), change_fields(i))  # type: ignore[arg-type]
                pipe.execute()
                while (got := counts(observer)["ok"] - before) < total:
                    if time.monotonic() - started > 600:
                        raise TimeoutError(f"{got}/{total} delivered")
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
                pipeline_cores = pipeline_cpu.cores()
                worker_cpu = pipeline_cpu.seconds()["worker"]
                final = counts(observer)
            late = baselines()
    finally:
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)

    rate = total / elapsed
    print(f"machine: {machine()}")
    print(
        f"database: {'PostgreSQL' if database_url.startswith('postgres') else 'SQLite'}, "
        f"worker: {args.processes} processes x {args.threads} threads, {args.subscriptions} subscriptions"
    )
    bursts = early.bursts + late.bursts
    direct = statistics.median(bursts)
    shaped = (early.shaped + late.shaped) / 2 if early.shaped and late.shaped else None
    print(
        f"baseline (direct signed POSTs, {threads} threads): {direct:,.0f} deliveries/s "
        f"(median of {', '.join(f'{b:,.0f}' for b in early.bursts)} before the pipeline, "
        f"{', '.join(f'{b:,.0f}' for b in late.bursts)} after it)"
    )
    for burst, cores in zip(bursts, early.burst_cores + late.burst_cores, strict=True):
        print(f"  burst of {burst:,.0f}/s: {split(cores, burst)}")
    if sustained is not None:
        print(f"sustained baseline ({total} POSTs, as many as the pipeline): {sustained:,.0f} deliveries/s")
    if shaped is not None:
        print(
            f"shaped baseline ({args.processes} client processes x {args.threads} threads, "
            f"{4000 * args.processes} POSTs): {shaped:,.0f} deliveries/s "
            f"(mean of {early.shaped:,.0f} before the pipeline and {late.shaped:,.0f} after it)"
        )
        for when, found in (("before", early), ("after", late)):
            print(f"  {when}: {split(found.shaped_cores, found.shaped)}")
    print(f"pipeline: {args.events} events -> {total} deliveries in {elapsed:.2f}s")
    print(
        f"  {rate:,.0f} deliveries/s = {rate / args.subscriptions:,.1f} events/s "
        f"({rate / direct:.0%} of baseline{f', {rate / sustained:.0%} of the sustained one' if sustained else ''}"
        f"{f', {rate / shaped:.0%} of the shaped one' if shaped else ''}); "
        f"worker CPU {worker_cpu:.1f}s "
        f"({worker_cpu / total * 1000:.2f} ms per delivery)"
    )
    print(f"  {split(pipeline_cores, rate)}")
    print(
        f"  receiver: {final['ok'] - before} verified, "
        f"duplicates {final['ok'] - final['unique'] - (seen['ok'] - seen['unique'])}, "
        f"bad signatures {final['bad_signature']}"
    )


def _groups(client: redis.Redis, namespace: str) -> list[dict[str, object]]:
    try:
        groups: Any = client.xinfo_groups(stream_key(namespace))
        return list(groups)
    except redis.ResponseError:
        return []


if __name__ == "__main__":
    main()
