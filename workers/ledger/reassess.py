"""Judge stored connections' freshness and health again and announce what changed, with no fold behind it (the
clock passed a threshold, or Codat's schedules changed). Rows are locked in id order, as the fold locks them, so a
change is announced once."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from workers.ledger.announce import FRESHNESS_CHANGED, company_names, transition_entries
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.freshness_state import record_transitions
from workers.ledger.tables import Connection, Sync
from workers.ledger.views import connection_out, load_assessments

log = logging.getLogger("synctrack.freshness")

BATCH_CONNECTIONS = 500
"""Connections compared per transaction, so one run never holds their locks for long."""


def reassess(
    engine: Engine,
    feed: ChangeFeed | None,
    policy: FreshnessPolicy,
    now: datetime,
    company_id: str | None = None,
    limit: int = BATCH_CONNECTIONS,
    platform_key: str | None = None,
) -> int:
    """Judge every connection (or `company_id`'s, or those on `platform_key`) at `now` and announce what differs
    from the last announced; return how many changed `freshness`."""
    after = ""
    changed = 0
    while True:
        entries, last_id, count = reassess_batch(engine, policy, now, after, limit, company_id, platform_key)
        if feed is not None and entries:
            feed.publish(entries)
        changed += sum(1 for entry in entries if entry.name == FRESHNESS_CHANGED)
        if count < limit:
            return changed
        after = last_id


def reassess_batch(
    engine: Engine,
    policy: FreshnessPolicy,
    now: datetime,
    after: str,
    limit: int,
    company_id: str | None = None,
    platform_key: str | None = None,
) -> tuple[list[FeedEntry], str, int]:
    """One transaction over up to `limit` connections with ids after `after`: (entries, last id, count)."""
    entries: list[FeedEntry] = []
    with Session(engine, expire_on_commit=False) as session, session.begin():
        query = select(Connection).where(col(Connection.id) > after)
        if company_id is not None:
            query = query.where(Connection.company_id == company_id)
        if platform_key is not None:
            query = query.where(Connection.platform_key == platform_key)
        query = query.order_by(col(Connection.id)).limit(limit)
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
        names = company_names(session, {t.company_id for t in transitions})
        for transition in transitions:
            conn = connections[transition.connection_id]
            out = connection_out(conn, names.get(conn.company_id), conn.id in active, assessed[conn.id])
            entries += transition_entries(transition, out, None)
            overdue = ",".join(transition.current.overdue_data_types) or "-"
            for kind, previous, current in transition.changes():
                detail = f" overdue={overdue}" if kind == "freshness_changed" else ""
                log.info(
                    "msg=%s connection=%s company=%s previous=%s current=%s%s",
                    kind,
                    conn.id,
                    conn.company_id,
                    previous,
                    current,
                    detail,
                )
    return entries, max(connections), len(connections)
