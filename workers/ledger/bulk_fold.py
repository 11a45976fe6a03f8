"""Fold many events in memory, by exactly the rules of `workers.ledger.store`, then write the result at once.

The workers' store reads each batch's slices from SQL and writes them back; a rebuild starts from an
empty ledger, so here the whole ledger lives in dictionaries while events are folded and is written
with bulk inserts once, at the end. The pure fold (`workers.ledger.fold.fold`) does the work; what this module
copies from `workers.ledger.store` is only the bookkeeping around it, and it must stay in step with it:

* company: created on first sight, then `workers.ledger.fold.fold_company`; a `company.deleted` folds
  every connection of the company, and each slice carries its company's deletion time;
* connection: created with the event's company (or ``""``) and empty stamps;
* slice: the connection, the data types the event names, its open syncs and the syncs the event keys;
* after the fold: a purge drops all the connection's syncs and data types; otherwise deleted syncs go
  and every sync and data type of the slice is kept.

`tests/ops/test_rebuild.py` folds the same shuffled stream both ways and compares the dumps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, Table, insert

from schemas.events import Event
from workers.ledger.fold import Change, ConnectionSlice, fold, fold_company
from workers.ledger.rows import OPEN_PHASES, CompanyRow, ConnectionRow, DataTypeRow, SyncRow, as_values
from workers.ledger.tables import Company, Connection, DataTypeState, Sync

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

    def apply(self, event: Event) -> list[Change]:
        """Fold `event`; return its changes (as the store would announce them)."""
        changes: list[Change] = []
        if event.company_id:
            company = self.companies.setdefault(event.company_id, CompanyRow(event.company_id))
            fold_company(company, event)
        targets = event.connection_ids
        if event.company_deleted:
            targets = sorted(self.members.get(event.company_id or "", ()))
        for connection_id in targets:
            changes += self._fold_connection(connection_id, event)
        return changes

    def _fold_connection(self, connection_id: str, event: Event) -> list[Change]:
        conn = self.connections.get(connection_id)
        if conn is None:
            conn = ConnectionRow(id=connection_id, company_id=event.company_id or "")
            self.connections[connection_id] = conn
            self.data_types[connection_id] = {}
            self.syncs[connection_id] = {}
            self.open_syncs[connection_id] = set()
        company = self.companies.get(conn.company_id)
        facts = [s for s in event.syncs if s.connection_id == connection_id]
        types, syncs, open_ids = (
            self.data_types[connection_id],
            self.syncs[connection_id],
            self.open_syncs[connection_id],
        )
        wanted = open_ids | {s.key for s in facts}
        state = ConnectionSlice(
            connection=conn,
            data_types={s.data_type: types[s.data_type] for s in facts if s.data_type in types},
            syncs={sync_id: syncs[sync_id] for sync_id in wanted if sync_id in syncs},
            company_deleted_at=company.deleted_at if company else None,
        )
        changes = fold(state, event)
        self.members.setdefault(conn.company_id, set()).add(connection_id)
        if state.purge_history:
            types.clear()
            syncs.clear()
            open_ids.clear()
            return changes
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
        return changes

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
            "data_types": {
                f"{cid}/{dt}": as_values(row)
                for cid, rows in sorted(self.data_types.items())
                for dt, row in sorted(rows.items())
            },
            "syncs": {
                k: as_values(v) for k, v in sorted((s.id, s) for rows in self.syncs.values() for s in rows.values())
            },
        }

    def rows(self) -> dict[Table, Iterable[dict[str, Any]]]:
        """Every row, table by table, as column -> value."""
        return {
            Company.__table__: (as_values(row) for row in self.companies.values()),  # type: ignore[attr-defined]
            Connection.__table__: (as_values(row) for row in self.connections.values()),  # type: ignore[attr-defined]
            DataTypeState.__table__: (  # type: ignore[attr-defined]
                as_values(row) for rows in self.data_types.values() for row in rows.values()
            ),
            Sync.__table__: (as_values(row) for rows in self.syncs.values() for row in rows.values()),  # type: ignore[attr-defined]
        }

    def write(self, engine: Engine) -> int:
        """Insert everything into the (empty) ledger tables of `engine`; return the row count."""
        written = 0
        with engine.begin() as conn:
            for table, rows in self.rows().items():
                chunk: list[dict[str, Any]] = []
                for row in rows:
                    chunk.append(row)
                    if len(chunk) >= INSERT_CHUNK:
                        conn.execute(insert(table), chunk)
                        written, chunk = written + len(chunk), []
                if chunk:
                    conn.execute(insert(table), chunk)
                    written += len(chunk)
        return written
