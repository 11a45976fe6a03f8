"""The claim finds a batch's rows by key alone, however many deliveries are due (`workers/outbound/deliver.py`).

Measured, not timed: a claim that also scanned the `(status, next_attempt_at)` index read one entry per due
delivery, so under a backlog every batch paid for the whole backlog (`bench/RESULTS.md`). PostgreSQL's own
plan says which indexes a claim reads, on a table with 20,000 due deliveries whose statistics were taken when all
of them were delivered (a quiet hour, then a burst).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from workers.outbound.deliver import CLAIM_SQL
from workers.runtime.db import make_engine, upgrade

BACKLOG = 20_000


def scanned_indexes(plan: dict[str, Any]) -> Iterator[str]:
    if "Index Name" in plan:
        yield plan["Index Name"]
    for child in plan.get("Plans", []):
        yield from scanned_indexes(child)


def test_a_claim_reads_only_the_primary_key_under_a_backlog(postgres_url: str) -> None:
    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscriptions (id, url, event_types, secret, enabled, created_at, updated_at)"
                    " VALUES ('sub', 'https://example.com/hook', '[\"*\"]', 'whsec_x', true, :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO deliveries (id, subscription_id, event_id, event_type, body, status, attempts,"
                    " next_attempt_at, window_started_at, created_at)"
                    " SELECT 'msg_' || lpad(n::text, 8, '0'), 'sub', n::text, 'sync.completed', '{}', 'delivered', 1,"
                    " NULL, :now, :now FROM generate_series(1, :backlog) AS n"
                ),
                {"now": now, "backlog": BACKLOG},
            )
            # The statistics of a quiet hour, when everything was delivered; then a burst makes a backlog.
            conn.exec_driver_sql("ANALYZE deliveries")
            conn.execute(
                text("UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = :now"), {"now": now}
            )
        ids = [f"msg_{n:08d}" for n in range(1, BACKLOG, BACKLOG // 50)]
        params = {"ids": ids, "due": now + timedelta(seconds=1), "lease": now + timedelta(minutes=1)}
        with engine.begin() as conn:
            explained = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + CLAIM_SQL, params).scalar()
            conn.rollback()  # EXPLAIN ANALYZE ran the claim: take it back
    finally:
        engine.dispose()

    assert explained is not None, "EXPLAIN answered no plan"
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    assert set(scanned_indexes(plan)) == {"deliveries_pkey"}, plan
    assert plan["Actual Rows"] == len(ids) == 50, "every row of the batch was due, and claimed"
