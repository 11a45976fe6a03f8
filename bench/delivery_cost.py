"""What one outbound delivery costs the worker, one message per delivery against batched messages.

    .venv/bin/python bench/delivery_cost.py [--deliveries 1000] [--subscriptions 10]
                                            [--database-url postgresql://postgres@127.0.0.1:5432/test]

Needs the real Redis. Stores `--deliveries` pending deliveries spread over `--subscriptions` subscriptions
(as the dispatcher records them), all aimed at the local receiver of `bench/subscriptions.py` (uvicorn in
its own process, verifying every signature), then makes every attempt in this process, one thread, as the
actor does (`Deliverer.run_batch`):

* baseline, same run: one delivery per call — one claim and one record transaction each, as when every
  queue message carried one delivery id;
* batched: `BATCH_SIZE` deliveries per call, as the `deliver_webhooks` messages carry them now.

Reported per delivery: this process's CPU (`time.process_time`, which other load on the machine does not
inflate) and the wall time (which it does: read it on an idle machine only). The receiver must have
verified every delivery exactly once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import Session  # noqa: E402

from bench.harness import machine, running  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from tests.support.services import REDIS_URL, free_port  # noqa: E402
from workers.ledger.tables import Subscription  # noqa: E402
from workers.outbound.deliver import Deliverer  # noqa: E402
from workers.outbound.dispatch import FeedChange, delivery_row, record_deliveries  # noqa: E402
from workers.outbound.signing import new_secret  # noqa: E402
from workers.runtime.db import make_engine, upgrade  # noqa: E402
from workers.runtime.delivery_queue import BATCH_SIZE  # noqa: E402


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


def store(engine: Any, subscriptions: list[Subscription], count: int, tag: str) -> list[str]:
    """`count` pending deliveries of distinct changes, round-robin over `subscriptions`; their ids."""
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        data = {"id": f"sync-{tag}-{i}", "company_id": "company-1", "phase": "succeeded", "padding": "x" * 300}
        change = FeedChange(f"{int(now.timestamp() * 1000)}-{i}", "sync.completed", "company-1", data)
        rows.append(delivery_row(subscriptions[i % len(subscriptions)], change, now))
    return record_deliveries(engine, rows)


def attempt_all(deliverer: Deliverer, ids: list[str], per_call: int) -> tuple[float, float, int]:
    """(CPU µs, wall µs) per delivery, and how many were delivered."""
    cpu, wall = time.process_time(), time.perf_counter()
    delivered = 0
    for start in range(0, len(ids), per_call):
        attempts = deliverer.run_batch(ids[start : start + per_call])
        delivered += sum(1 for a in attempts if a.outcome == "delivered")
    return (time.process_time() - cpu) / len(ids) * 1e6, (time.perf_counter() - wall) / len(ids) * 1e6, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    database_url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='delivery-cost-')) / 'ledger.db'}"
    upgrade(database_url)
    engine = make_engine(database_url)
    port = free_port()
    secrets = {f"/hook/{n}": new_secret() for n in range(args.subscriptions)}
    now = datetime.now(UTC)
    subscriptions = [
        Subscription(
            id=f"sub_{uuid.uuid4().hex}",
            url=f"http://127.0.0.1:{port}{path}",
            event_types=["*"],
            secret=secret,
            created_at=now,
            updated_at=now,
        )
        for path, secret in secrets.items()
    ]
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(subscriptions)
    namespace = f"bench-delivery-cost-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        subscriptions_allow_http=True,
        subscriptions_allow_private=True,
    )
    client = redis.Redis.from_url(REDIS_URL)
    env = {"RECEIVER_SECRETS": json.dumps(secrets)}
    argv = ["-m", "uvicorn", "bench.subscription_receiver:app", "--port", str(port), "--log-level", "warning"]
    print(f"machine: {machine()}; {'PostgreSQL' if database_url.startswith('postgres') else 'SQLite'}")
    print(f"{args.deliveries} deliveries per row over {args.subscriptions} subscriptions, one thread")
    print("| deliveries per call | CPU µs per delivery | wall µs per delivery (idle machine only) |")
    print("|---|---|---|")
    try:
        with running("delivery-cost-receiver", [*argv, "--no-access-log"], env):
            wait_http(f"http://127.0.0.1:{port}/count")
            deliverer = Deliverer(settings, engine, client)
            attempt_all(deliverer, store(engine, subscriptions, 100, "warm"), BATCH_SIZE)  # connections, caches
            for per_call in (1, BATCH_SIZE):
                ids = store(engine, subscriptions, args.deliveries, f"run{per_call}")
                cpu_us, wall_us, delivered = attempt_all(deliverer, ids, per_call)
                assert delivered == len(ids), f"{delivered} of {len(ids)} delivered"
                label = f"{per_call} (baseline: one per message)" if per_call == 1 else f"{per_call} (as queued)"
                print(f"| {label} | {cpu_us:,.0f} | {wall_us:,.0f} |", flush=True)
            counts = httpx.get(f"http://127.0.0.1:{port}/count", timeout=5).json()
            deliverer.close()
    finally:
        for key in client.scan_iter(f"{namespace}:*", count=1000):
            client.delete(key)
    print(
        f"receiver: {counts['ok']} verified, {counts['ok'] - counts['unique']} duplicates, "
        f"{counts['bad_signature']} bad signatures"
    )


if __name__ == "__main__":
    main()
