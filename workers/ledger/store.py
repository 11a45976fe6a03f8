"""Loads the slice of the ledger a batch of events touches, runs the pure fold on it, writes it back.

The caller owns the transaction. One batch costs a handful of statements whatever its size: rows are read
with ``IN`` lists into plain dataclasses (`workers.ledger.rows`), folded in memory in batch order, and only the rows
the fold changed are written back with multi-row statements.

Concurrency: on PostgreSQL the batch's connection rows are locked (``SELECT … FOR UPDATE``, in id order, so
two batches never wait on each other in a cycle) before their slices are read, and company names are a
conditional upsert that only a newer stamp wins. On SQLite the transaction already holds the database's
single write lock (see `workers.runtime.db`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from schemas.events import Event
from workers.ledger.bulk_sql import insert_rows, update_rows
from workers.ledger.fold import Change, ConnectionSlice, fold, fold_company
from workers.ledger.rows import (
    OPEN_PHASES,
    CompanyRow,
    ConnectionRow,
    DataTypeRow,
    SyncRow,
    as_values,
    fingerprint,
)
from workers.ledger.tables import Company, Connection, DataTypeState, Sync

CONNECTIONS: Table = Connection.__table__  # type: ignore[attr-defined]
DATA_TYPES: Table = DataTypeState.__table__  # type: ignore[attr-defined]
SYNCS: Table = Sync.__table__  # type: ignore[attr-defined]
COMPANIES: Table = Company.__table__  # type: ignore[attr-defined]
IN_CHUNK = 500
"""Longest ``IN`` list per statement (SQLite allows a few thousand bound parameters)."""


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def upsert_companies(session: Session, events: Iterable[Event]) -> None:
    """Create companies; rewrite a company's name, description and tags only with a newer stamp; keep
    the earliest deletion (the rules of `workers.ledger.fold.fold_company`, as SQL)."""
    facts: dict[str, CompanyRow] = {}
    for event in events:
        if event.company_id:
            fold_company(facts.setdefault(event.company_id, CompanyRow(event.company_id)), event)
    if not facts:
        return
    rows = [as_values(row) for row in facts.values()]
    rows.sort(key=lambda r: str(r["id"]))  # one lock order for every batch
    stmt = _insert(session)(COMPANIES)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={c: getattr(stmt.excluded, c) for c in ("name", "name_stamp", "description", "tags")},
        where=COMPANIES.c.name_stamp < stmt.excluded.name_stamp,
    )
    session.execute(stmt, rows)
    for row in rows:
        if row["deleted_at"] is not None:
            session.execute(
                update(COMPANIES)
                .where(COMPANIES.c.id == row["id"])
                .where(or_(COMPANIES.c.deleted_at.is_(None), COMPANIES.c.deleted_at > row["deleted_at"]))
                .values(deleted_at=row["deleted_at"])
            )


def company_connections(session: Session, company_ids: set[str]) -> dict[str, list[str]]:
    """Every connection the ledger holds of each company (what a `company.deleted` deletes)."""
    found: dict[str, list[str]] = {c: [] for c in company_ids}
    for chunk in _chunks(sorted(company_ids)):
        query = select(CONNECTIONS.c.company_id, CONNECTIONS.c.id).where(CONNECTIONS.c.company_id.in_(chunk))
        for company_id, connection_id in session.execute(query.order_by(CONNECTIONS.c.id)):
            found[company_id].append(connection_id)
    return found


def company_deletions(session: Session, company_ids: set[str]) -> dict[str, datetime]:
    """When each of these companies was deleted, for those that were."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(sorted(c for c in company_ids if c)):
        query = select(COMPANIES.c.id, COMPANIES.c.deleted_at).where(
            COMPANIES.c.id.in_(chunk), COMPANIES.c.deleted_at.is_not(None)
        )
        found.update({company_id: deleted_at for company_id, deleted_at in session.execute(query)})
    return found


def lock_connections(session: Session, wanted: dict[str, str]) -> dict[str, ConnectionRow]:
    """Return the connection rows (`id -> company`), created if new, locked for the transaction."""
    ids = sorted(wanted)
    stamps = {"status_stamp": "", "details_stamp": "", "last_sync_stamp": "", "last_link_failure_stamp": ""}
    new = [{"id": i, "company_id": wanted[i], **stamps} for i in ids]
    insert_rows(session, CONNECTIONS, new, conflict=["id"], update_columns=[])
    rows: dict[str, ConnectionRow] = {}
    lock = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(ids):
        query = select(CONNECTIONS).where(CONNECTIONS.c.id.in_(chunk)).order_by(CONNECTIONS.c.id)
        if lock:
            query = query.with_for_update()
        for mapping in session.execute(query).mappings():
            rows[mapping["id"]] = ConnectionRow(**mapping)
    return rows


def load_slices(
    session: Session, connections: dict[str, ConnectionRow], events: Sequence[Event]
) -> dict[str, ConnectionSlice]:
    """Each connection's slice: the data types and the syncs (open, or named by a key) the batch can touch."""
    slices = {cid: ConnectionSlice(connection=row) for cid, row in connections.items()}
    pairs = sorted({(f.connection_id, f.data_type) for e in events for f in e.syncs})
    keys = sorted({f.key for e in events for f in e.syncs})
    for chunk in _chunks(pairs):
        query = select(DATA_TYPES).where(tuple_(DATA_TYPES.c.connection_id, DATA_TYPES.c.data_type).in_(chunk))
        for mapping in session.execute(query).mappings():
            row = DataTypeRow(**mapping)
            slices[row.connection_id].data_types[row.data_type] = row
    ids = sorted(connections)
    for chunk in _chunks(ids):
        query = select(SYNCS).where(SYNCS.c.connection_id.in_(chunk), SYNCS.c.phase.in_(OPEN_PHASES))
        for mapping in session.execute(query).mappings():
            slices[mapping["connection_id"]].syncs[mapping["id"]] = SyncRow(**mapping)
    for chunk in _chunks(keys):
        query = select(SYNCS).where(SYNCS.c.id.in_(chunk))
        for mapping in session.execute(query).mappings():
            state = slices.get(mapping["connection_id"])
            if state is not None:
                state.syncs[mapping["id"]] = SyncRow(**mapping)
    return slices


@dataclass
class _Loaded:
    """What was read, to write back only what changed."""

    connections: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    data_types: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    syncs: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def _snapshot(slices: dict[str, ConnectionSlice]) -> _Loaded:
    loaded = _Loaded()
    for cid, state in slices.items():
        loaded.connections[cid] = fingerprint(state.connection)
        for dt, row in state.data_types.items():
            loaded.data_types[(cid, dt)] = fingerprint(row)
        for sid, sync in state.syncs.items():
            loaded.syncs[sid] = fingerprint(sync)
    return loaded


def save_slices(session: Session, slices: dict[str, ConnectionSlice], loaded: _Loaded) -> None:
    purged = sorted(cid for cid, s in slices.items() if s.purge_history)
    for chunk in _chunks(purged):
        session.execute(delete(SYNCS).where(SYNCS.c.connection_id.in_(chunk)))
        session.execute(delete(DATA_TYPES).where(DATA_TYPES.c.connection_id.in_(chunk)))
    gone = sorted({sid for s in slices.values() if not s.purge_history for sid in s.deleted_syncs} & set(loaded.syncs))
    for chunk in _chunks(gone):
        session.execute(delete(SYNCS).where(SYNCS.c.id.in_(chunk)))

    changed_connections = [
        as_values(s.connection) for cid, s in slices.items() if fingerprint(s.connection) != loaded.connections[cid]
    ]
    update_rows(session, CONNECTIONS, changed_connections, "id")

    type_rows = [
        as_values(row)
        for cid, s in slices.items()
        for dt, row in s.data_types.items()
        if loaded.data_types.get((cid, dt)) != fingerprint(row)
    ]
    insert_rows(session, DATA_TYPES, type_rows, conflict=["connection_id", "data_type"])
    sync_rows = [
        as_values(row)
        for s in slices.values()
        for sid, row in s.syncs.items()
        if loaded.syncs.get(sid) != fingerprint(row)
    ]
    insert_rows(session, SYNCS, sync_rows, conflict=["id"])


def fold_events(session: Session, events: Sequence[Event]) -> tuple[list[Change], dict[str, ConnectionSlice]]:
    """Fold `events`, in order, into the ledger inside the caller's transaction.

    Returns the changes (each naming its event) and the slices after the fold, so the caller can render
    what changed without reading it back.
    """
    events = [e for e in events if e.known]
    upsert_companies(session, events)
    wanted: dict[str, str] = {}
    for event in events:
        for cid in event.connection_ids:
            wanted.setdefault(cid, event.company_id or "")
    members = company_connections(session, {e.company_id for e in events if e.company_deleted and e.company_id})
    for company_id, ids in members.items():
        for cid in ids:
            wanted.setdefault(cid, company_id)
    if not wanted:
        return [], {}
    slices = load_slices(session, lock_connections(session, wanted), events)
    deletions = company_deletions(session, {s.connection.company_id for s in slices.values()})
    for state in slices.values():
        state.company_deleted_at = deletions.get(state.connection.company_id)
    loaded = _snapshot(slices)
    changes: list[Change] = []
    for event in events:
        targets = members.get(event.company_id or "", []) if event.company_deleted else event.connection_ids
        for cid in targets:
            changes.extend(fold(slices[cid], event))
    save_slices(session, slices, loaded)
    return changes, slices


def fold_event(session: Session, event: Event) -> tuple[list[Change], dict[str, ConnectionSlice]]:
    """Fold one event (actions and reconciliation fold their findings one at a time)."""
    return fold_events(session, [event])
