"""Stale syncs: an active sync nothing closed within `SYNCTRACK_SYNC_STALE_AFTER` is asked about at Codat, then kept
running, closed by Codat's result, or marked `stale`.

With an API key Codat is asked first (`workers.codat.still_running`): a sync it still runs stays active and
`delayed` (``sync.delayed``, asked again after a doubling wait); a result it has is folded. Else the sync turns
``stale``, announced as ``sync.failed`` with `event_id` null; a late completion still closes it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Engine, or_
from sqlmodel import Session, col, select

from schemas.api import as_utc
from schemas.codat import CodatAnswer, OpenSync, dataset_id
from schemas.events import Event
from schemas.settings import Settings
from workers.ledger.announce import announce_changes, company_names, transition_entries
from workers.ledger.changes import FeedEntry
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.freshness_state import record_transitions
from workers.ledger.store import fold_events
from workers.ledger.tables import Company, Connection, Sync, WebhookEvent
from workers.ledger.views import connection_out, load_assessments, sync_out
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.stale")

BATCH_CONNECTIONS = 200
"""Connections handled per transaction, so one run never holds the write lock for long."""
MAX_WAIT_SECONDS = 3600.0
"""The longest wait between two questions to Codat about one delayed sync."""
DELAYED = "sync.delayed"


AskCodat = Callable[[Settings, Sequence[OpenSync]], Mapping[str, CodatAnswer]]
"""What Codat says of each sync, by sync id; syncs Codat could not be asked about are left out."""


def stale_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_SYNC_STALE_CHECK_SECONDS`; off when either setting is 0."""
    settings = runtime.settings
    return settings.sync_stale_check_seconds if settings.sync_stale_after_seconds > 0 else 0


def first_wait(settings: Settings) -> float:
    """Seconds before a sync that just turned delayed (or whose Codat status changed) is asked about again."""
    return min(max(settings.sync_stale_check_seconds, 1.0), MAX_WAIT_SECONDS)


def mark_stale_syncs(runtime: WorkerRuntime, now: datetime | None = None, ask: AskCodat | None = None) -> int:
    """Settle every sync active since before now − stale-after (see the module); return how many turned stale."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=runtime.settings.sync_stale_after_seconds)
    asking = ask if runtime.settings.codat_api_key else None
    total, after = 0, ""
    while True:
        due, connections = due_syncs(runtime.engine, cutoff, now, after, BATCH_CONNECTIONS)
        if not due:
            return total
        answers = asking(runtime.settings, due) if asking is not None else None
        entries = settle(runtime.engine, due, answers, cutoff, now, first_wait(runtime.settings), runtime.freshness)
        if runtime.feed is not None:
            runtime.feed.publish(entries)
        total += sum(1 for entry in entries if entry.name == "sync.failed" and entry.data.get("phase") == "stale")
        if len(connections) < BATCH_CONNECTIONS:
            return total
        after = connections[-1]


def _due(cutoff: datetime, now: datetime) -> tuple[ColumnElement[bool], ...]:
    # Waited long enough by both clocks: since Codat's request time, and since Synctrack heard of it
    # (a replayed old `connection.connected` is not stale the moment it arrives); and, once delayed, its wait.
    heard = select(WebhookEvent.received_at).where(col(WebhookEvent.id) == Sync.event_id).scalar_subquery()
    return (
        col(Sync.phase) == "active",
        col(Sync.requested_at) < cutoff,
        or_(heard.is_(None), heard < cutoff),
        or_(col(Sync.next_check_at).is_(None), col(Sync.next_check_at) <= now),
    )


def due_syncs(
    engine: Engine, cutoff: datetime, now: datetime, after: str, limit: int
) -> tuple[list[OpenSync], list[str]]:
    """The due syncs of up to `limit` connections with ids after `after`; (syncs, those connection ids in order)."""
    with Session(engine) as session:
        query = select(Sync.connection_id).where(*_due(cutoff, now), col(Sync.connection_id) > after).distinct()
        connection_ids = list(session.exec(query.order_by(col(Sync.connection_id)).limit(limit)).all())
        if not connection_ids:
            return [], []
        rows = session.exec(select(Sync).where(col(Sync.connection_id).in_(connection_ids), *_due(cutoff, now)))
        syncs = [
            OpenSync(
                id=row.id,
                company_id=row.company_id,
                connection_id=row.connection_id,
                data_type=row.data_type,
                requested_at=as_utc(row.requested_at or row.sort_at),
                dataset_id=dataset_id(row.id),
            )
            for row in rows
        ]
    return syncs, connection_ids


def settle(
    engine: Engine,
    due: Sequence[OpenSync],
    answers: Mapping[str, CodatAnswer] | None,
    cutoff: datetime,
    now: datetime,
    wait: float,
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> list[FeedEntry]:
    """One transaction: each sync of `due` still due is delayed, closed by Codat's result or marked stale by
    `answers` (None: without asking Codat, all stale); returns the feed entries."""
    entries: list[FeedEntry] = []
    results: dict[str, Event] = {}
    marked: set[str] = set()
    connection_ids = sorted({sync.connection_id for sync in due})
    with Session(engine, expire_on_commit=False) as session, session.begin():
        for connection_id in connection_ids:
            # Locked first, as the fold does, so a completion folding now waits for us (or we for it).
            session.get(Connection, connection_id, with_for_update=True, populate_existing=True)
            ids = [sync.id for sync in due if sync.connection_id == connection_id]
            rows = session.exec(select(Sync).where(col(Sync.id).in_(ids), *_due(cutoff, now))).all()
            for row in rows:
                if answers is not None and row.id not in answers:
                    continue  # Codat could not be asked: the next run asks again
                answer = answers[row.id] if answers is not None else CodatAnswer()
                if answer.result is not None:
                    event = answer.result.reconcile_event()
                    results[event.id] = event
                elif answer.running is not None:
                    if _delay(row, answer.running, now, wait):
                        entries.append(_entry(DELAYED, row.company_id, connection_id, sync_out(row)))
                else:
                    _mark_stale(row)
                    marked.add(connection_id)
                    entries.append(_entry("sync.failed", row.company_id, connection_id, sync_out(row)))
        session.flush()
        updated: set[str] = set()
        if results:
            changes, slices = fold_events(session, list(results.values()))
            names = company_names(session, {state.connection.company_id for state in slices.values()})
            folded = announce_changes(session, changes, slices, names, freshness, datetime.now(UTC))
            entries += folded
            updated = {entry.connection_id for entry in folded if entry.name == "connection.updated"}
        entries += _connections_without_active_sync(session, marked - updated, freshness)
    return entries


def _delay(row: Sync, status: str, now: datetime, first: float) -> bool:
    """Keep `row` active as delayed at Codat's `status`; True when that is news (it just turned delayed, or
    Codat's status changed), which also starts the waits afresh."""
    news = not row.delayed or row.codat_status != status
    wait = first if news or not row.check_wait_seconds else min(row.check_wait_seconds * 2, MAX_WAIT_SECONDS)
    row.delayed, row.codat_status, row.check_wait_seconds = True, status, wait
    row.next_check_at = now + timedelta(seconds=wait)
    log.info(
        "msg=sync_delayed sync=%s connection=%s codat_status=%s next_check_at=%s",
        row.id,
        row.connection_id,
        status,
        row.next_check_at.isoformat(),
    )
    return news


def _mark_stale(row: Sync) -> None:
    row.phase = "stale"
    row.delayed, row.codat_status, row.next_check_at, row.check_wait_seconds = False, None, None, None
    log.info("msg=sync_stale sync=%s connection=%s requested_at=%s", row.id, row.connection_id, row.requested_at)


def _connections_without_active_sync(
    session: Session, connection_ids: set[str], freshness: FreshnessPolicy
) -> list[FeedEntry]:
    """``connection.updated`` for each of these connections left with no active sync, then its health and
    freshness transitions."""
    entries = []
    for connection_id in sorted(connection_ids):
        still_active = session.exec(
            select(Sync.id).where(Sync.connection_id == connection_id, Sync.phase == "active").limit(1)
        ).first()
        conn = session.get(Connection, connection_id, populate_existing=True)
        if conn is None or still_active is not None:
            continue
        company = session.get(Company, conn.company_id)
        now = datetime.now(UTC)
        assessed = load_assessments(session, [conn], (), freshness, now)
        out = connection_out(conn, company.name if company else None, False, assessed[conn.id])
        entries.append(_entry("connection.updated", conn.company_id, connection_id, out))
        for transition in record_transitions(session, {conn.id: conn}, assessed, now):
            entries += transition_entries(transition, out, None, with_update=False)
    return entries


def _entry(name: str, company_id: str, connection_id: str, out: BaseModel) -> FeedEntry:
    return FeedEntry(name, company_id, connection_id, {**out.model_dump(mode="json"), "event_id": None})


def stale_job(ask: AskCodat | None) -> PeriodicJob[WorkerRuntime]:
    """The periodic job, asking Codat through `ask` (when an API key is set)."""
    return PeriodicJob("mark_stale_syncs", stale_interval, lambda runtime: mark_stale_syncs(runtime, ask=ask))
