"""Fold many events in memory, by exactly the rules of `workers.ledger.store`, then write the result at once.

The workers' store reads each batch's slices from SQL and writes them back; a rebuild starts from an
empty ledger, so here the whole ledger lives in dictionaries while events are folded and is written
with bulk inserts once, at the end. The pure fold (`workers.ledger.fold.fold`) does the work; what this module
copies from `workers.ledger.store` is only the bookkeeping around it, and it must stay in step with it:

* company: created on first sight; its name is a register ordered by the name stamp; `deleted_at`
  is the earliest `company.deleted`;
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
from workers.ledger.fold import ConnectionSlice, fold, stamp
from workers.ledger.rows import OPEN_PHASES, ConnectionRow, DataTypeRow, SyncRow, as_values
from workers.ledger.tables import Company, Connection, DataTypeState, Sync

INSERT_CHUNK = 2_000


class MemoryLedger:
    def __init__(self) -> None:
        self.companies: dict[str, dict[str, Any]] = {}
        self.connections: dict[str, ConnectionRow] = {}
        self.data_types: dict[str, dict[str, DataTypeRow]] = {}
        self.syncs: dict[str, dict[str, SyncRow]] = {}
        self.open_syncs: dict[str, set[str]] = {}

    def apply(self, event: Event) -> None:
        self._company(event)
        for connection_id in event.connection_ids:
            self._fold_connection(connection_id, event)

    def _company(self, event: Event) -> None:
        if not event.company_id:
            return
        name_stamp = stamp(event.generated_at, 0, event.id) if event.company_name else ""
        deleted = event.event_type == "company.deleted"
        company = self.companies.get(event.company_id)
        if company is None:
            self.companies[event.company_id] = {
                "id": event.company_id,
                "name": event.company_name,
                "name_stamp": name_stamp,
                "deleted_at": event.generated_at if deleted else None,
            }
            return
        if event.company_name and company["name_stamp"] < name_stamp:
            company["name"], company["name_stamp"] = event.company_name, name_stamp
        if deleted and (company["deleted_at"] is None or company["deleted_at"] > event.generated_at):
            company["deleted_at"] = event.generated_at

    def _fold_connection(self, connection_id: str, event: Event) -> None:
        conn = self.connections.get(connection_id)
        if conn is None:
            conn = ConnectionRow(id=connection_id, company_id=event.company_id or "")
            self.connections[connection_id] = conn
            self.data_types[connection_id] = {}
            self.syncs[connection_id] = {}
            self.open_syncs[connection_id] = set()
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
        )
        fold(state, event)
        if state.purge_history:
            types.clear()
            syncs.clear()
            open_ids.clear()
            return
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

    def rows(self) -> dict[Table, Iterable[dict[str, Any]]]:
        """Every row, table by table, as column -> value."""
        return {
            Company.__table__: self.companies.values(),  # type: ignore[attr-defined]
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
