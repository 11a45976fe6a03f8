"""What was last announced of each connection's freshness (table `connection_freshness`), and its changes.

Freshness is computed, never stored in the ledger, but "it changed" needs a memory of what was said.
`record_transitions` compares fresh values with it and writes and returns the differences, inside the caller's
transaction: the fold's (for the connections a batch changed) or the periodic check's (for those the clock
changed), both holding the connection's row lock, so a change is announced once. Any change of `freshness`,
`overdue_data_types` or `expected_by` is a transition; only a change of `freshness` is ``freshness_changed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select
from sqlmodel import Session

from schemas.statuses import Freshness
from workers.ledger.bulk_sql import insert_rows
from workers.ledger.freshness import ConnectionFreshness
from workers.ledger.rows import ConnectionRow
from workers.ledger.tables import Connection, FreshnessRecord

RECORDS: Table = FreshnessRecord.__table__  # type: ignore[attr-defined]
CONNECTIONS: Table = Connection.__table__  # type: ignore[attr-defined]
IN_CHUNK = 500

SOURCE_TYPES = frozenset({"Accounting", "Banking", "BankFeed", "Commerce", "Expense", "Other", "Unknown"})
"""Codat's `sourceType` values; anything else is counted as `Other` so metric labels stay bounded."""


@dataclass(frozen=True, slots=True)
class Transition:
    connection_id: str
    company_id: str
    previous: Freshness | None
    current: ConnectionFreshness

    @property
    def freshness_changed(self) -> bool:
        return self.previous != self.current.freshness


def record_transitions(
    session: Session,
    connections: Mapping[str, ConnectionRow],
    assessed: Mapping[str, ConnectionFreshness],
    now: datetime,
) -> list[Transition]:
    """Record each connection's freshness where it differs from the last recorded; return those, in id order."""
    ids = sorted(assessed)
    known: dict[str, Any] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        for row in session.execute(select(RECORDS).where(RECORDS.c.connection_id.in_(chunk))):
            known[row.connection_id] = row
    transitions: list[Transition] = []
    writes: list[dict[str, Any]] = []
    for cid in ids:
        fresh, old = assessed[cid], known.get(cid)
        overdue = list(fresh.overdue_data_types)
        if old is not None and (old.freshness, list(old.overdue_data_types), _utc(old.expected_by)) == (
            fresh.freshness,
            overdue,
            fresh.expected_by,
        ):
            continue
        previous = old.freshness if old is not None else None
        company_id = connections[cid].company_id
        transitions.append(Transition(cid, company_id, previous, fresh))
        changed_at = now if previous != fresh.freshness or old is None else old.changed_at
        writes.append(
            {
                "connection_id": cid,
                "company_id": company_id,
                "freshness": fresh.freshness,
                "expected_by": fresh.expected_by,
                "overdue_data_types": overdue,
                "changed_at": changed_at,
            }
        )
    insert_rows(session, RECORDS, writes, conflict=["connection_id"])
    return transitions


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def source_type_label(source_type: str | None) -> str:
    if not source_type:
        return "Unknown"
    return source_type if source_type in SOURCE_TYPES else "Other"


def count_by_freshness(engine: Engine) -> dict[tuple[str, str], int]:
    """(freshness, source type) -> connections not deleted, as last recorded."""
    query = (
        select(RECORDS.c.freshness, CONNECTIONS.c.source_type, func.count())
        .join(CONNECTIONS, CONNECTIONS.c.id == RECORDS.c.connection_id)
        .where(CONNECTIONS.c.deleted_at.is_(None))
        .group_by(RECORDS.c.freshness, CONNECTIONS.c.source_type)
    )
    counts: dict[tuple[str, str], int] = {}
    with engine.connect() as conn:
        for freshness, source_type, n in conn.execute(query):
            key = (str(freshness), source_type_label(source_type))
            counts[key] = counts.get(key, 0) + int(n)
    return counts
