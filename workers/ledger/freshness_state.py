"""What was last announced of each connection's freshness and health (`connection_freshness`). `record_transitions`
writes the differences inside the caller's transaction (holding the connection's row lock, so a change is announced
once), logs them to the timeline, and asks for a reconciliation when a Linked connection's data type turns overdue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select
from sqlmodel import Session

from schemas.api import as_utc
from schemas.statuses import Freshness, Health
from workers.ledger.bulk_sql import chunked, insert_rows
from workers.ledger.connection_health import ConnectionHealth
from workers.ledger.freshness import ConnectionFreshness
from workers.ledger.rows import ConnectionRow
from workers.ledger.tables import CONNECTIONS, FreshnessRecord, ReconcileRequest, StateChange
from workers.ledger.views import Assessment

RECORDS: Table = FreshnessRecord.__table__  # type: ignore[attr-defined]
STATE_CHANGES: Table = StateChange.__table__  # type: ignore[attr-defined]
RECONCILE_REQUESTS: Table = ReconcileRequest.__table__  # type: ignore[attr-defined]

SOURCE_TYPES = frozenset({"Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown"})
"""Codat's `sourceType` values; anything else is labelled `Other`, so metric labels stay bounded."""


@dataclass(frozen=True, slots=True)
class Transition:
    connection_id: str
    company_id: str
    previous: Freshness | None
    current: ConnectionFreshness
    previous_health: Health | None
    health: ConnectionHealth

    def changes(self) -> list[tuple[str, str | None, str]]:
        """(`freshness_changed` or `health_changed`, previous, current) of each that changed."""
        both = (
            ("freshness_changed", self.previous, self.current.freshness),
            ("health_changed", self.previous_health, self.health.health),
        )
        return [change for change in both if change[1] != change[2]]


def record_transitions(
    session: Session,
    connections: Mapping[str, ConnectionRow],
    assessed: Mapping[str, Assessment],
    now: datetime,
    event_ids: Mapping[str, str | None] | None = None,
) -> list[Transition]:
    """Record each connection's freshness and health where they differ from the last recorded; return those, in id
    order. Changes are written to the timeline with their cause (`event_ids`, by connection)."""
    ids = sorted(assessed)
    known: dict[str, Any] = {}
    for chunk in chunked(ids):
        for row in session.execute(select(RECORDS).where(RECORDS.c.connection_id.in_(chunk))):
            known[row.connection_id] = row
    transitions: list[Transition] = []
    writes: list[dict[str, Any]] = []
    logged: list[dict[str, Any]] = []
    overdue_companies: set[str] = set()
    for cid in ids:
        fresh, health, old = assessed[cid].freshness, assessed[cid].health, known.get(cid)
        overdue = list(fresh.overdue_data_types)
        expected_by = old and old.expected_by and as_utc(old.expected_by)
        if old is not None and (old.freshness, old.overdue_data_types, expected_by, old.health) == (
            fresh.freshness,
            overdue,
            fresh.expected_by,
            health.health,
        ):
            continue
        company_id = connections[cid].company_id
        if old is not None and connections[cid].status == "Linked" and set(overdue) - set(old.overdue_data_types):
            overdue_companies.add(company_id)
        previous, previous_health = (old.freshness, old.health) if old is not None else (None, None)
        transition = Transition(cid, company_id, previous, fresh, previous_health, health)
        transitions.append(transition)
        writes.append(
            {
                "connection_id": cid,
                "company_id": company_id,
                "freshness": fresh.freshness,
                "expected_by": fresh.expected_by,
                "overdue_data_types": overdue,
                "changed_at": old.changed_at if old is not None and previous == fresh.freshness else now,
                "health": health.health,
                "health_changed_at": old.health_changed_at
                if old is not None and previous_health == health.health
                else now,
            }
        )
        for kind, before, after in transition.changes():
            cause = (event_ids or {}).get(cid)
            change = {"kind": kind, "previous": before, "current": after, "event_id": cause}
            logged.append({"connection_id": cid, "company_id": company_id, "at": now, **change})
    insert_rows(session, RECORDS, writes, conflict=["connection_id"])
    insert_rows(session, STATE_CHANGES, logged)
    _request_reconciles(session, overdue_companies, now)
    return transitions


def _request_reconciles(session: Session, company_ids: set[str], now: datetime) -> None:
    """Ask for a targeted reconciliation of each company without a waiting request."""
    if not company_ids:
        return
    column = RECONCILE_REQUESTS.c.company_id
    waiting = set(session.execute(select(column).where(column.in_(sorted(company_ids)))).scalars())
    requests = [{"company_id": company_id, "requested_at": now} for company_id in sorted(company_ids - waiting)]
    insert_rows(session, RECONCILE_REQUESTS, requests)


def source_type_label(source_type: str | None) -> str:
    if not source_type:
        return "Unknown"
    return source_type if source_type in SOURCE_TYPES else "Other"


def count_by_freshness(engine: Engine) -> dict[tuple[str, str], int]:
    """(freshness, source type) -> connections not deleted, as last recorded."""
    return _count_by(engine, "freshness")


def count_by_health(engine: Engine) -> dict[tuple[str, str], int]:
    """(health, source type) -> connections not deleted, as last recorded."""
    return _count_by(engine, "health")


def _count_by(engine: Engine, column: str) -> dict[tuple[str, str], int]:
    state = RECORDS.c[column]
    query = (
        select(state, CONNECTIONS.c.source_type, func.count())
        .join(CONNECTIONS, CONNECTIONS.c.id == RECORDS.c.connection_id)
        .where(CONNECTIONS.c.deleted_at.is_(None), state.is_not(None))
        .group_by(state, CONNECTIONS.c.source_type)
    )
    counts: dict[tuple[str, str], int] = {}
    with engine.connect() as conn:
        for value, source_type, n in conn.execute(query):
            key = (str(value), source_type_label(source_type))
            counts[key] = counts.get(key, 0) + int(n)
    return counts
