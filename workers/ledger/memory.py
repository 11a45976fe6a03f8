"""The ledger in memory: what a rebuild folds into before writing every row at once, and what tests compare with.
A `workers.ledger.fold.Ledger` like the SQL store: both fold by the same driver."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Engine, insert

from schemas.events import Event
from workers.ledger.fold import Change, ConnectionSlice, fold_batch, fold_company
from workers.ledger.rows import OPEN_PHASES, CompanyRow, ConnectionRow, DataTypeRow, SyncRow, as_values
from workers.ledger.tables import COMPANIES, CONNECTIONS, DATA_TYPES, SYNCS

INSERT_CHUNK = 2_000


class MemoryLedger:
    def __init__(self) -> None:
        self.companies: dict[str, CompanyRow] = {}
        self.members: dict[str, set[str]] = {}
        """Connection ids of each company."""
        self.connections: dict[str, ConnectionRow] = {}
        self.data_types: dict[str, dict[str, DataTypeRow]] = {}
        self.syncs: dict[str, dict[str, SyncRow]] = {}
        self.open_syncs: dict[str, set[str]] = {}

    def fold(self, events: Sequence[Event]) -> list[Change]:
        """Fold `events` as one batch; return their changes (as the store would announce them)."""
        return fold_batch(self, events)[0]

    def apply(self, event: Event) -> list[Change]:
        """Fold one event; return its changes."""
        return self.fold([event])

    def fold_companies(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.company_id:
                fold_company(self.companies.setdefault(event.company_id, CompanyRow(event.company_id)), event)

    def company_connections(self, company_ids: set[str]) -> dict[str, list[str]]:
        return {c: sorted(self.members.get(c, ())) for c in company_ids}

    def company_deletions(self, company_ids: set[str]) -> dict[str, datetime]:
        companies = (self.companies.get(c) for c in company_ids)
        return {c.id: c.deleted_at for c in companies if c is not None and c.deleted_at is not None}

    def load_slices(self, wanted: dict[str, str], events: Sequence[Event]) -> dict[str, ConnectionSlice]:
        slices: dict[str, ConnectionSlice] = {}
        for cid, company_id in wanted.items():
            if cid not in self.connections:
                self.connections[cid] = ConnectionRow(id=cid, company_id=company_id)
                self.data_types[cid], self.syncs[cid], self.open_syncs[cid] = {}, {}, set()
            syncs = self.syncs[cid]
            slices[cid] = ConnectionSlice(self.connections[cid], syncs={i: syncs[i] for i in self.open_syncs[cid]})
        for fact in (f for e in events for f in e.syncs):
            state = slices.get(fact.connection_id)
            if state is None:
                continue
            data_type = self.data_types[fact.connection_id].get(fact.data_type)
            if data_type is not None:
                state.data_types[fact.data_type] = data_type
            sync = self.syncs[fact.connection_id].get(fact.key)
            if sync is not None:
                state.syncs[fact.key] = sync
        return slices

    def save_slices(self, slices: dict[str, ConnectionSlice]) -> None:
        for cid, state in slices.items():
            self.members.setdefault(state.connection.company_id, set()).add(cid)
            types, syncs, open_ids = self.data_types[cid], self.syncs[cid], self.open_syncs[cid]
            if state.purge_history:
                types.clear()
                syncs.clear()
                open_ids.clear()
                continue
            for sync_id in state.deleted_syncs:
                syncs.pop(sync_id, None)
                open_ids.discard(sync_id)
            for row in state.syncs.values():
                syncs[row.id] = row
                if row.phase in OPEN_PHASES:
                    open_ids.add(row.id)
                else:
                    open_ids.discard(row.id)
            types.update(state.data_types)

    def sync_rows(self) -> dict[str, SyncRow]:
        """Every sync, by id."""
        return {sid: row for rows in self.syncs.values() for sid, row in rows.items()}

    def data_type_rows(self) -> dict[tuple[str, str], DataTypeRow]:
        """Every data type's state, by (connection, data type)."""
        return {(cid, dt): row for cid, rows in self.data_types.items() for dt, row in rows.items()}

    def dump(self) -> dict[str, Any]:
        """Every row as column -> value, keyed and sorted: what tests compare ledgers by."""
        return {
            "companies": {k: as_values(v) for k, v in sorted(self.companies.items())},
            "connections": {k: as_values(v) for k, v in sorted(self.connections.items())},
            "data_types": {f"{cid}/{dt}": as_values(row) for (cid, dt), row in sorted(self.data_type_rows().items())},
            "syncs": {k: as_values(v) for k, v in sorted(self.sync_rows().items())},
        }

    def write(self, engine: Engine) -> int:
        """Insert everything into the (empty) ledger tables of `engine`; return the row count."""
        tables = {
            COMPANIES: self.companies.values(),
            CONNECTIONS: self.connections.values(),
            DATA_TYPES: self.data_type_rows().values(),
            SYNCS: self.sync_rows().values(),
        }
        written = 0
        with engine.begin() as conn:
            for table, rows in tables.items():
                values = (as_values(row) for row in rows)
                while chunk := list(islice(values, INSERT_CHUNK)):
                    conn.execute(insert(table), chunk)
                    written += len(chunk)
        return written
