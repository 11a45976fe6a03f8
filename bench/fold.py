"""How fast the worker path stores and folds: `handle_webhooks` on SQLite and PostgreSQL, one event per
transaction and in batches of 200 (what a worker's folding thread does under load). Baseline in the same
run: inserting the same raw events with no fold, in the same batch sizes, so the fold's own cost shows.

    python bench/fold.py [--events 5000] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.workload import webhook_mix  # noqa: E402
from workers.ingest.handle import FoldRequest, handle_webhooks  # noqa: E402
from workers.ledger.tables import WebhookEvent  # noqa: E402
from workers.runtime.db import make_engine, upgrade  # noqa: E402


def stored(url: str, deliveries: list, fold: bool, batch: int) -> float:  # type: ignore[type-arg]
    from sqlalchemy import insert

    upgrade(url)
    engine = make_engine(url)
    received = datetime.now(UTC).isoformat()
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    started = time.perf_counter()
    for start in range(0, len(deliveries), batch):
        chunk = deliveries[start : start + batch]
        if fold:
            handle_webhooks(engine, None, [FoldRequest(d.message_id, d.body, received) for d in chunk])
        else:
            with engine.begin() as conn:
                conn.execute(
                    insert(table),
                    [
                        {"id": d.message_id, "event_type": "x", "received_at": datetime.now(UTC), "body": d.body}
                        for d in chunk
                    ],
                )
    rate = len(deliveries) / (time.perf_counter() - started)
    engine.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args()
    deliveries = webhook_mix(args.events, companies=50, hot_companies=3, seed=1)
    print(f"events: {len(deliveries)} (unique, realistic mix)")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 200):
            base = stored(f"sqlite:///{tmp}/base{batch}.db", deliveries, fold=False, batch=batch)
            full = stored(f"sqlite:///{tmp}/fold{batch}.db", deliveries, fold=True, batch=batch)
            print(f"sqlite   {batch:>3}: raw insert {base:8,.0f}/s  store+fold {full:8,.0f}/s  ratio {full / base:.2f}")
    if args.postgres:
        import psycopg

        root = args.postgres.rsplit("/", 1)[0]
        for batch in (1, 200):
            for name in ("bench_base", "bench_fold"):
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    conn.execute(f'CREATE DATABASE "{name}"')
            base = stored(f"{root}/bench_base", deliveries, fold=False, batch=batch)
            full = stored(f"{root}/bench_fold", deliveries, fold=True, batch=batch)
            print(f"postgres {batch:>3}: raw insert {base:8,.0f}/s  store+fold {full:8,.0f}/s  ratio {full / base:.2f}")


if __name__ == "__main__":
    main()
