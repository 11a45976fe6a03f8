"""Stale syncs: an active sync that nothing closed within `SYNCTRACK_SYNC_STALE_AFTER` becomes `stale`.

Codat never says a read started; Synctrack infers active syncs and waits for the completion that
closes them. When that completion never comes (lost beyond Svix's retries, a read Codat dropped), a
dashboard would show a spinner forever. This periodic job marks such a sync `stale` once both its
`requested_at` and the arrival of the webhook that opened it are older than that, and announces it:

* ``sync.failed`` with the sync object, whose `phase` is ``stale``: the event for "ended without a
  known success"; the phase tells it apart from a failure Codat reported;
* ``connection.updated`` when the connection has no active sync left (`sync_active` turns false), then
  ``connection.health_changed`` (and ``connection.freshness_changed``) if that changed its health.

`event_id` is null in both: no webhook caused them. A stale sync stays open for the fold
(`OPEN_PHASES`), so a late completion still closes it and is announced as usual.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from workers.ledger.announce import transition_entries
from workers.ledger.changes import FeedEntry
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.freshness_state import record_transitions
from workers.ledger.tables import Company, Connection, Sync, WebhookEvent
from workers.ledger.views import connection_out, load_assessments, sync_out
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.context import WorkerRuntime

log = logging.getLogger("synctrack.stale")

BATCH_CONNECTIONS = 200
"""Connections handled per transaction, so one run never holds the write lock for long."""


def stale_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_SYNC_STALE_CHECK_SECONDS`; off when either setting is 0."""
    settings = runtime.settings
    return settings.sync_stale_check_seconds if settings.sync_stale_after_seconds > 0 else 0


def mark_stale_syncs(runtime: WorkerRuntime, now: datetime | None = None) -> int:
    """Mark every sync active since before now − stale-after as `stale`; return how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=runtime.settings.sync_stale_after_seconds)
    total = 0
    while True:
        entries, connections = mark_batch(runtime.engine, cutoff, BATCH_CONNECTIONS, runtime.freshness)
        if runtime.feed is not None:
            runtime.feed.publish(entries)
        total += sum(1 for entry in entries if entry.name == "sync.failed")
        if connections < BATCH_CONNECTIONS:
            return total


def mark_batch(
    engine: Engine, cutoff: datetime, limit: int, freshness: FreshnessPolicy = DEFAULT_POLICY
) -> tuple[list[FeedEntry], int]:
    """One transaction: up to `limit` connections' overdue syncs marked; (feed entries, connections)."""
    entries: list[FeedEntry] = []
    with Session(engine, expire_on_commit=False) as session, session.begin():
        # Waited long enough by both clocks: since Codat's request time, and since Synctrack heard of it
        # (a replayed old `connection.connected` is not stale the moment it arrives).
        heard = select(WebhookEvent.received_at).where(col(WebhookEvent.id) == Sync.event_id).scalar_subquery()
        overdue = (
            Sync.phase == "active",
            col(Sync.requested_at) < cutoff,
            or_(heard.is_(None), heard < cutoff),
        )
        connection_ids = session.exec(
            select(Sync.connection_id).where(*overdue).distinct().order_by(col(Sync.connection_id)).limit(limit)
        ).all()
        for connection_id in connection_ids:
            # Locked first, as the fold does, so a completion folding now waits for us (or we for it).
            conn = session.exec(
                select(Connection)
                .where(Connection.id == connection_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).first()
            rows = session.exec(select(Sync).where(Sync.connection_id == connection_id, *overdue)).all()
            for row in rows:
                row.phase = "stale"
                entries.append(
                    _entry("sync.failed", row.company_id, connection_id, sync_out(row).model_dump(mode="json"))
                )
                log.info(
                    "msg=sync_stale sync=%s connection=%s requested_at=%s", row.id, connection_id, row.requested_at
                )
            session.flush()
            still_active = session.exec(
                select(Sync.id).where(Sync.connection_id == connection_id, Sync.phase == "active").limit(1)
            ).first()
            if rows and conn is not None and still_active is None:
                company = session.get(Company, conn.company_id)
                now = datetime.now(UTC)
                assessed = load_assessments(session, [conn], (), freshness, now)
                out = connection_out(conn, company.name if company else None, False, assessed[conn.id])
                entries.append(
                    _entry("connection.updated", conn.company_id, connection_id, out.model_dump(mode="json"))
                )
                for transition in record_transitions(session, {conn.id: conn}, assessed, now):
                    entries += transition_entries(transition, out, None, with_update=False)
    return entries, len(connection_ids)


def _entry(name: str, company_id: str, connection_id: str, data: dict[str, object]) -> FeedEntry:
    return FeedEntry(name, company_id, connection_id, {**data, "event_id": None})


STALE_JOB = PeriodicJob("mark_stale_syncs", stale_interval, mark_stale_syncs)
