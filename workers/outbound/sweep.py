"""Periodic upkeep of deliveries: prune old ones, and queue again a pending delivery overdue by
`STUCK_AFTER_SECONDS` (its message was lost with a process or the in-process Redis of `synctrack dev`).
A duplicate message is harmless: an attempt claims its delivery first.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import Session, col, delete, select, update

from workers.ledger.tables import Delivery
from workers.runtime.broker import sync_redis
from workers.runtime.delivery_queue import enqueue_deliveries
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

STUCK_AFTER_SECONDS = 300.0
"""Longer than any queue backlog should last; each delivery is re-queued at most once per this."""
MAX_PER_RUN = 1_000


def sweep(runtime: WorkerRuntime, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    settings = runtime.settings
    overdue = now - timedelta(seconds=STUCK_AFTER_SECONDS)
    stuck = select(Delivery.id).where(col(Delivery.status) == "pending", col(Delivery.next_attempt_at) < overdue)
    requeue = update(Delivery).where(col(Delivery.id).in_(stuck.limit(MAX_PER_RUN).scalar_subquery()))
    with Session(runtime.engine) as session, session.begin():
        ids = list(session.exec(requeue.values(next_attempt_at=now).returning(col(Delivery.id))).scalars())
        cutoff = now - timedelta(days=settings.subscriptions_delivery_retention_days)
        pruned = session.exec(
            delete(Delivery).where(col(Delivery.status).in_(("delivered", "failed")), col(Delivery.created_at) < cutoff)
        ).rowcount
    if ids:
        # A runtime without a change feed has no client to share: one for this run, closed after it.
        with nullcontext(runtime.feed.redis) if runtime.feed else sync_redis(settings) as redis:
            enqueue_deliveries(redis, settings.redis_namespace, ids)
    return f"requeued={len(ids)} pruned={pruned}"


SWEEP_JOB = PeriodicJob(
    name="subscription-deliveries",
    interval=lambda runtime: runtime.settings.subscriptions_sweep_every_seconds,
    run=sweep,
)
