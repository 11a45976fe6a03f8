"""Retention: raw webhook bodies older than `SYNCTRACK_RAW_EVENT_RETENTION_DAYS` are removed, hourly and by
`synctrack prune`, in short batches so live folds never wait long. The row stays as a tombstone, so a late
redelivery is still a duplicate and `GET /v1/events` still lists it; only replay from that event is lost."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Engine, func, update
from sqlmodel import Session, col, select

from workers.ledger.tables import WebhookEvent
from workers.runtime.metrics import record_pruned
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.retention")

PRUNE_EVERY_SECONDS = 3600.0
BATCH = 2_000


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)


def _prunable(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    return col(WebhookEvent.received_at) < cutoff, col(WebhookEvent.body).is_not(None)


def count_prunable(engine: Engine, cutoff: datetime) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).where(*_prunable(cutoff))).one())


def prune_raw_events(engine: Engine, cutoff: datetime, batch: int = BATCH) -> int:
    """Remove the body of every event received before `cutoff`; return how many were pruned."""
    total = 0
    while True:
        with Session(engine) as session, session.begin():
            ids = session.exec(select(WebhookEvent.id).where(*_prunable(cutoff)).limit(batch)).all()
            if ids:
                prune = update(WebhookEvent).where(col(WebhookEvent.id).in_(ids)).values(body=None)
                session.execute(prune.execution_options(synchronize_session=False))
        total += len(ids)
        record_pruned(len(ids))
        if len(ids) < batch:
            return total


def prune_job(runtime: WorkerRuntime) -> int:
    days = runtime.settings.raw_event_retention_days
    pruned = prune_raw_events(runtime.engine, cutoff_for(days))
    log.info("msg=raw_events_pruned count=%d retention_days=%d", pruned, days)
    return pruned


PRUNE_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "prune_raw_events",
    lambda runtime: PRUNE_EVERY_SECONDS if runtime.settings.raw_event_retention_days > 0 else 0,
    prune_job,
)
"""Hourly while retention is on (`SYNCTRACK_RAW_EVENT_RETENTION_DAYS` > 0)."""
