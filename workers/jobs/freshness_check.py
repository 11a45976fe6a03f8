"""The freshness check: announce the connections whose freshness (or health) the clock changed.

When a threshold passes nothing is folded — no webhook says "your invoices are now a day old" — so, like
stale syncs, this is the clock's job. Every `SYNCTRACK_FRESHNESS_CHECK_SECONDS` (0 = off) a worker reads
every connection in id order, `BATCH_CONNECTIONS` per transaction, computes its freshness at `now`, and
compares it with what was last announced (`workers.ledger.freshness_state`). For each that differs it
announces, after the commit:

* ``connection.updated`` with the Connection object and its new `freshness`, `expected_by`,
  `overdue_data_types`;
* ``connection.freshness_changed`` (`{connection, previous, current, overdue_data_types, event_id}`)
  when `freshness` itself changed; `previous` is null for a connection first seen;
* ``connection.health_changed`` (`{connection, previous, current, next_action, event_id}`) when `health`
  changed without a fold announcing it (a connection never announced yet, a sync marked stale).

`event_id` is null in both: no webhook caused them. Changes a fold causes are announced by the fold
itself (`workers.ledger.announce`), so this check finds only the clock's. Connection rows are locked (in
id order, as the fold locks them) while a batch is compared and recorded, so a concurrent fold and this
check never both announce one change.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from workers.ledger.announce import FRESHNESS_CHANGED, transition_entries
from workers.ledger.changes import FeedEntry
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.freshness_state import record_transitions
from workers.ledger.tables import Company, Connection, Sync
from workers.ledger.views import connection_out, load_assessments
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.context import WorkerRuntime

log = logging.getLogger("synctrack.freshness")

BATCH_CONNECTIONS = 500
"""Connections compared per transaction, so one run never holds their locks for long."""


def freshness_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_FRESHNESS_CHECK_SECONDS`; 0 turns the check off."""
    return runtime.settings.freshness_check_seconds


def check_freshness(runtime: WorkerRuntime, now: datetime | None = None) -> int:
    """Compare every connection's freshness at `now` with the last announced; announce and return the
    number of connections whose freshness changed."""
    now = now or datetime.now(UTC)
    after = ""
    changed = 0
    while True:
        entries, last_id, count = check_batch(runtime.engine, runtime.freshness, now, after, BATCH_CONNECTIONS)
        if runtime.feed is not None and entries:
            runtime.feed.publish(entries)
        changed += sum(1 for entry in entries if entry.name == FRESHNESS_CHANGED)
        if count < BATCH_CONNECTIONS:
            return changed
        after = last_id


def check_batch(
    engine: Engine, policy: FreshnessPolicy, now: datetime, after: str, limit: int
) -> tuple[list[FeedEntry], str, int]:
    """One transaction over up to `limit` connections with ids after `after`: (entries, last id, count)."""
    entries: list[FeedEntry] = []
    with Session(engine, expire_on_commit=False) as session, session.begin():
        query = select(Connection).where(col(Connection.id) > after).order_by(col(Connection.id)).limit(limit)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        connections = {row.id: row for row in session.exec(query).all()}
        if not connections:
            return [], after, 0
        active = set(
            session.exec(
                select(Sync.connection_id).where(col(Sync.connection_id).in_(list(connections)), Sync.phase == "active")
            ).all()
        )
        assessed = load_assessments(session, connections.values(), active, policy, now)
        transitions = record_transitions(session, connections, assessed, now)
        if transitions:
            company_ids = {t.company_id for t in transitions}
            names = dict(session.exec(select(Company.id, Company.name).where(col(Company.id).in_(company_ids))).all())
        for transition in transitions:
            conn = connections[transition.connection_id]
            out = connection_out(conn, names.get(conn.company_id), conn.id in active, assessed[conn.id])
            entries += transition_entries(transition, out, None)
            if transition.freshness_changed:
                log.info(
                    "msg=freshness_changed connection=%s company=%s previous=%s current=%s overdue=%s",
                    conn.id,
                    conn.company_id,
                    transition.previous,
                    transition.current.freshness,
                    ",".join(transition.current.overdue_data_types) or "-",
                )
            if transition.health_changed:
                log.info(
                    "msg=health_changed connection=%s company=%s previous=%s current=%s",
                    conn.id,
                    conn.company_id,
                    transition.previous_health,
                    transition.health.health,
                )
    return entries, max(connections), len(connections)


FRESHNESS_JOB = PeriodicJob("check_freshness", freshness_interval, check_freshness)
