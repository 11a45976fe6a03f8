"""What was last announced of each connection's freshness and health (table `connection_freshness`), and its
changes.

Freshness and health are computed, never stored in the ledger, but "it changed" needs a memory of what was said.
`record_transitions` compares fresh values with it and writes and returns the differences, inside the caller's
transaction: the fold's (for the connections a batch changed) or the periodic checks' (for those the clock or the
stale-sync job changed), both holding the connection's row lock, so a change is announced once. Any change of
`freshness`, `overdue_data_types`, `expected_by` or `health` is a transition; only a change of `freshness` is
``freshness_changed``, and of `health` ``health_changed``. Each of those two is also written to
`connection_state_changes`, the connection's timeline of what was announced. A Linked connection with a data type
that turns overdue (not one first recorded so, as an import's are) asks for a targeted reconciliation of its company
(`reconcile_requests`, `workers.codat.overdue_reconcile`): a result may be waiting at Codat whose webhook was lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select
from sqlmodel import Session

from schemas.statuses import Freshness, Health
from workers.ledger.bulk_sql import insert_rows
from workers.ledger.connection_health import ConnectionHealth
from workers.ledger.freshness import ConnectionFreshness
from workers.ledger.rows import ConnectionRow
from workers.ledger.tables import Connection, FreshnessRecord, ReconcileRequest, StateChange
from workers.ledger.views import Assessment

RECORDS: Table = FreshnessRecord.__table__  # type: ignore[attr-defined]
STATE_CHANGES: Table = StateChange.__table__  # type: ignore[attr-defined]
CONNECTIONS: Table = Connection.__table__  # type: ignore[attr-defined]
RECONCILE_REQUESTS: Table = ReconcileRequest.__table__  # type: ignore[attr-defined]
IN_CHUNK = 500

SOURCE_TYPES = frozenset({"Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown"})
"""Codat's `sourceType` values; anything else is counted as `Other` so metric labels stay bounded."""


@dataclass(frozen=True, slots=True)
class Transition:
    connection_id: str
    company_id: str
    previous: Freshness | None
    current: ConnectionFreshness
    previous_health: Health | None
    health: ConnectionHealth

    @property
    def freshness_changed(self) -> bool:
        return self.previous != self.current.freshness

    @property
    def health_changed(self) -> bool:
        return self.previous_health != self.health.health


def record_transitions(
    session: Session,
    connections: Mapping[str, ConnectionRow],
    assessed: Mapping[str, Assessment],
    now: datetime,
    event_ids: Mapping[str, str | None] | None = None,
) -> list[Transition]:
    """Record each connection's freshness and health where they differ from the last recorded; return those, in
    id order. Changes of either are written to the timeline with their cause (`event_ids`, by connection)."""
    ids = sorted(assessed)
    known: dict[str, Any] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        for row in session.execute(select(RECORDS).where(RECORDS.c.connection_id.in_(chunk))):
            known[row.connection_id] = row
    transitions: list[Transition] = []
    writes: list[dict[str, Any]] = []
    logged: list[dict[str, Any]] = []
    overdue_companies: set[str] = set()
    for cid in ids:
        fresh, health, old = assessed[cid].freshness, assessed[cid].health, known.get(cid)
        overdue = list(fresh.overdue_data_types)
        if old is not None and (
            old.freshness,
            list(old.overdue_data_types),
            _utc(old.expected_by),
            old.health,
        ) == (fresh.freshness, overdue, fresh.expected_by, health.health):
            continue
        previous = old.freshness if old is not None else None
        previous_health = old.health if old is not None else None
        company_id = connections[cid].company_id
        if old is not None and connections[cid].status == "Linked" and set(overdue) - set(old.overdue_data_types):
            overdue_companies.add(company_id)
        transition = Transition(cid, company_id, previous, fresh, previous_health, health)
        transitions.append(transition)
        changed_at = now if previous != fresh.freshness or old is None else old.changed_at
        health_changed_at = now if transition.health_changed else old.health_changed_at if old is not None else now
        writes.append(
            {
                "connection_id": cid,
                "company_id": company_id,
                "freshness": fresh.freshness,
                "expected_by": fresh.expected_by,
                "overdue_data_types": overdue,
                "changed_at": changed_at,
                "health": health.health,
                "health_changed_at": health_changed_at,
            }
        )
        cause = (event_ids or {}).get(cid)
        if transition.freshness_changed:
            logged.append(_logged(transition, "freshness_changed", previous, fresh.freshness, now, cause))
        if transition.health_changed:
            logged.append(_logged(transition, "health_changed", previous_health, health.health, now, cause))
    insert_rows(session, RECORDS, writes, conflict=["connection_id"])
    insert_rows(session, STATE_CHANGES, logged)
    _request_reconciles(session, overdue_companies, now)
    return transitions


def _request_reconciles(session: Session, company_ids: set[str], now: datetime) -> None:
    """Ask for a targeted reconciliation of each company not asked for yet (one waiting request is enough)."""
    if not company_ids:
        return
    column = RECONCILE_REQUESTS.c.company_id
    waiting = set(session.execute(select(column).where(column.in_(sorted(company_ids)))).scalars())
    requests = [{"company_id": company_id, "requested_at": now} for company_id in sorted(company_ids - waiting)]
    insert_rows(session, RECONCILE_REQUESTS, requests)


def _logged(
    transition: Transition, kind: str, previous: str | None, current: str, now: datetime, event_id: str | None
) -> dict[str, Any]:
    return {
        "connection_id": transition.connection_id,
        "company_id": transition.company_id,
        "at": now,
        "kind": kind,
        "previous": previous,
        "current": current,
        "event_id": event_id,
    }


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


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
