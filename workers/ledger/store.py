"""The ledger in SQL, for the fold driver (`workers.ledger.fold.fold_batch`): slices read with ``IN`` lists, only
changed rows written back, in the caller's transaction. On PostgreSQL the connection rows are locked in id order
first, so two batches never wait on each other in a cycle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import zip_longest
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from schemas.events import Event
from workers.ledger.bulk_sql import chunked, insert_rows, update_rows
from workers.ledger.fold import Change, ConnectionSlice, fold_batch, fold_company
from workers.ledger.rows import OPEN_PHASES, CompanyRow, ConnectionRow, DataTypeRow, SyncRow, as_values, fingerprint
from workers.ledger.tables import COMPANIES, CONNECTIONS, DATA_TYPES, SYNCS


class SqlLedger:
    """The ledger's tables through one session, for one batch (`load_slices` before `save_slices`)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        # Each row as read: only rows that differ from it are written back.
        self._connections: dict[str, tuple[Any, ...]] = {}
        self._data_types: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._syncs: dict[str, tuple[Any, ...]] = {}

    def fold_companies(self, events: Sequence[Event]) -> None:
        """The rules of `fold_company` as one conditional upsert, and the earliest deletion kept."""
        facts: dict[str, CompanyRow] = {}
        for event in events:
            if event.company_id:
                fold_company(facts.setdefault(event.company_id, CompanyRow(event.company_id)), event)
        if not facts:
            return
        rows = [as_values(row) for row in facts.values()]
        rows.sort(key=lambda r: str(r["id"]))  # one lock order for every batch
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        stmt = insert(COMPANIES)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={c: getattr(stmt.excluded, c) for c in ("name", "name_stamp", "description", "tags")},
            where=COMPANIES.c.name_stamp < stmt.excluded.name_stamp,
        )
        self.session.execute(stmt, rows)
        for row in rows:
            if row["deleted_at"] is not None:
                self.session.execute(
                    update(COMPANIES)
                    .where(COMPANIES.c.id == row["id"])
                    .where(or_(COMPANIES.c.deleted_at.is_(None), COMPANIES.c.deleted_at > row["deleted_at"]))
                    .values(deleted_at=row["deleted_at"])
                )

    def company_connections(self, company_ids: set[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {c: [] for c in company_ids}
        for chunk in chunked(sorted(company_ids)):
            query = select(CONNECTIONS.c.company_id, CONNECTIONS.c.id).where(CONNECTIONS.c.company_id.in_(chunk))
            for company_id, connection_id in self.session.execute(query.order_by(CONNECTIONS.c.id)):
                found[company_id].append(connection_id)
        return found

    def company_deletions(self, company_ids: set[str]) -> dict[str, datetime]:
        found: dict[str, datetime] = {}
        for chunk in chunked(sorted(c for c in company_ids if c)):
            query = select(COMPANIES.c.id, COMPANIES.c.deleted_at).where(
                COMPANIES.c.id.in_(chunk), COMPANIES.c.deleted_at.is_not(None)
            )
            found.update({company_id: deleted_at for company_id, deleted_at in self.session.execute(query)})
        return found

    def _lock_connections(self, wanted: dict[str, str]) -> dict[str, ConnectionRow]:
        """The connection rows (`id -> company`), created if new, locked for the transaction."""
        ids = sorted(wanted)
        stamps = {"status_stamp": "", "details_stamp": "", "last_sync_stamp": "", "last_link_failure_stamp": ""}
        new = [{"id": i, "company_id": wanted[i], **stamps} for i in ids]
        insert_rows(self.session, CONNECTIONS, new, conflict=["id"], update_columns=[])
        rows: dict[str, ConnectionRow] = {}
        lock = self.session.get_bind().dialect.name == "postgresql"
        for chunk in chunked(ids):
            query = select(CONNECTIONS).where(CONNECTIONS.c.id.in_(chunk)).order_by(CONNECTIONS.c.id)
            if lock:
                query = query.with_for_update()
            for mapping in self.session.execute(query).mappings():
                rows[mapping["id"]] = ConnectionRow(**mapping)
        return rows

    def load_slices(self, wanted: dict[str, str], events: Sequence[Event]) -> dict[str, ConnectionSlice]:
        connections = self._lock_connections(wanted)
        slices = {cid: ConnectionSlice(connection=row) for cid, row in connections.items()}
        pairs = sorted({(f.connection_id, f.data_type) for e in events for f in e.syncs})
        keys = sorted({f.key for e in events for f in e.syncs})
        for some_pairs in chunked(pairs):
            query = select(DATA_TYPES).where(tuple_(DATA_TYPES.c.connection_id, DATA_TYPES.c.data_type).in_(some_pairs))
            for mapping in self.session.execute(query).mappings():
                row = DataTypeRow(**mapping)
                slices[row.connection_id].data_types[row.data_type] = row
        # The open syncs of the connections and the syncs the events key, in one statement per chunk of each.
        for owners, some_keys in zip_longest(chunked(sorted(connections)), chunked(keys), fillvalue=()):
            wanted_syncs: list[ColumnElement[bool]] = [SYNCS.c.id.in_(some_keys)] if some_keys else []
            if owners:
                wanted_syncs.append(and_(SYNCS.c.connection_id.in_(owners), SYNCS.c.phase.in_(OPEN_PHASES)))
            for mapping in self.session.execute(select(SYNCS).where(or_(*wanted_syncs))).mappings():
                state = slices.get(mapping["connection_id"])
                if state is not None:
                    state.syncs[mapping["id"]] = SyncRow(**mapping)
        for cid, state in slices.items():
            self._connections[cid] = fingerprint(state.connection)
            for dt, data_type in state.data_types.items():
                self._data_types[(cid, dt)] = fingerprint(data_type)
            for sid, sync in state.syncs.items():
                self._syncs[sid] = fingerprint(sync)
        return slices

    def save_slices(self, slices: dict[str, ConnectionSlice]) -> None:
        session = self.session
        purged = sorted(cid for cid, s in slices.items() if s.purge_history)
        for chunk in chunked(purged):
            session.execute(delete(SYNCS).where(SYNCS.c.connection_id.in_(chunk)))
            session.execute(delete(DATA_TYPES).where(DATA_TYPES.c.connection_id.in_(chunk)))
        deleted = {sid for s in slices.values() if not s.purge_history for sid in s.deleted_syncs}
        gone = sorted(deleted & self._syncs.keys())
        for chunk in chunked(gone):
            session.execute(delete(SYNCS).where(SYNCS.c.id.in_(chunk)))
        connections = [
            as_values(s.connection) for cid, s in slices.items() if fingerprint(s.connection) != self._connections[cid]
        ]
        update_rows(session, CONNECTIONS, connections, "id")
        data_types = [
            as_values(row)
            for cid, s in slices.items()
            for dt, row in s.data_types.items()
            if self._data_types.get((cid, dt)) != fingerprint(row)
        ]
        insert_rows(session, DATA_TYPES, data_types, conflict=["connection_id", "data_type"])
        syncs = [
            as_values(row)
            for s in slices.values()
            for sid, row in s.syncs.items()
            if self._syncs.get(sid) != fingerprint(row)
        ]
        insert_rows(session, SYNCS, syncs, conflict=["id"])


def fold_events(session: Session, events: Sequence[Event]) -> tuple[list[Change], dict[str, ConnectionSlice]]:
    """Fold `events`, in order, into the ledger inside the caller's transaction (see `fold_batch`)."""
    return fold_batch(SqlLedger(session), events)
