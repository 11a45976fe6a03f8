"""Loads the slice of the ledger an event touches, runs the pure fold on it, writes it back.

The caller owns the transaction. Concurrency: on PostgreSQL each connection row is locked
(``SELECT … FOR UPDATE``, in id order so two events never wait on each other in a cycle) before its
slice is read; the company name is a conditional upsert that only a newer stamp can win. On SQLite
the transaction already holds the database's single write lock (see `workers.db`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from schemas.events import Event
from workers.fold import Change, ConnectionSlice, fold, stamp
from workers.ledger import OPEN_PHASES, Company, Connection, DataTypeState, Sync


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def upsert_company(session: Session, event: Event) -> None:
    """Create the company, or rename it if this event's stamp is newer than the name's."""
    if not event.company_id:
        return
    name_stamp = stamp(event.generated_at, 0, event.id) if event.company_name else ""
    table = Company.__table__  # type: ignore[attr-defined]
    stmt = _insert(session)(table).values(
        id=event.company_id,
        name=event.company_name,
        name_stamp=name_stamp,
        deleted_at=event.generated_at if event.event_type == "company.deleted" else None,
    )
    if event.company_name:
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"name": stmt.excluded.name, "name_stamp": stmt.excluded.name_stamp},
            where=table.c.name_stamp < stmt.excluded.name_stamp,
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["id"])
    session.execute(stmt)
    if event.event_type == "company.deleted":
        company = session.get(Company, event.company_id)
        if company and (company.deleted_at is None or company.deleted_at > event.generated_at):
            company.deleted_at = event.generated_at


def lock_connection(session: Session, connection_id: str, company_id: str) -> Connection:
    """Return the connection row, created if new, locked for the rest of the transaction."""
    table = Connection.__table__  # type: ignore[attr-defined]
    session.execute(
        _insert(session)(table)
        .values(id=connection_id, company_id=company_id, status_stamp="", details_stamp="", last_sync_stamp="")
        .on_conflict_do_nothing(index_elements=["id"])
    )
    query = select(Connection).where(col(Connection.id) == connection_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).one()


def load_slice(session: Session, connection: Connection, event: Event) -> ConnectionSlice:
    facts = [s for s in event.syncs if s.connection_id == connection.id]
    data_types = {s.data_type for s in facts}
    keys = {s.key for s in facts}
    dt_rows = (
        session.exec(
            select(DataTypeState).where(
                DataTypeState.connection_id == connection.id, col(DataTypeState.data_type).in_(data_types)
            )
        ).all()
        if data_types
        else []
    )
    sync_rows = session.exec(
        select(Sync).where(
            Sync.connection_id == connection.id,
            (col(Sync.phase).in_(OPEN_PHASES)) | (col(Sync.id).in_(keys)),
        )
    ).all()
    return ConnectionSlice(
        connection=connection,
        data_types={row.data_type: row for row in dt_rows},
        syncs={row.id: row for row in sync_rows},
    )


def save_slice(
    session: Session, state: ConnectionSlice, loaded: Iterable[Sync], loaded_types: Iterable[DataTypeState]
) -> None:
    loaded_by_id = {row.id: row for row in loaded}
    if state.purge_history:
        for obj in [*loaded_by_id.values(), *loaded_types]:
            session.delete(obj)
        session.flush()
        session.execute(delete(Sync).where(col(Sync.connection_id) == state.connection.id))
        session.execute(delete(DataTypeState).where(col(DataTypeState.connection_id) == state.connection.id))
        return
    for sync_id in state.deleted_syncs:
        row = loaded_by_id.get(sync_id)
        if row is not None:
            session.delete(row)
    for row in state.syncs.values():
        if row.id not in loaded_by_id:
            session.add(row)
    for dt in state.data_types.values():
        session.add(dt)


def fold_event(session: Session, event: Event) -> tuple[list[Change], dict[str, ConnectionSlice]]:
    """Fold `event` into the ledger inside the caller's transaction; return the changes and the
    slices (so the caller can render what changed without reading it back)."""
    upsert_company(session, event)
    changes: list[Change] = []
    slices: dict[str, ConnectionSlice] = {}
    for connection_id in event.connection_ids:
        connection = lock_connection(session, connection_id, event.company_id or "")
        state = load_slice(session, connection, event)
        loaded, loaded_types = list(state.syncs.values()), list(state.data_types.values())
        changes.extend(fold(state, event))
        save_slice(session, state, loaded, loaded_types)
        slices[connection_id] = state
    session.flush()
    return changes, slices
