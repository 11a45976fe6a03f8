"""An in-memory ledger that folds events the way `workers.ledger.store` does, for fast pure-fold tests."""

from __future__ import annotations

from typing import Any

from schemas.events import Event
from workers.ledger.fold import Change, ConnectionSlice, fold, fold_company
from workers.ledger.rows import CompanyRow, ConnectionRow, DataTypeRow, SyncRow, as_values


class MemoryLedger:
    def __init__(self) -> None:
        self.companies: dict[str, CompanyRow] = {}
        self.connections: dict[str, ConnectionRow] = {}
        self.data_types: dict[tuple[str, str], DataTypeRow] = {}
        self.syncs: dict[str, SyncRow] = {}

    def apply(self, event: Event) -> list[Change]:
        changes: list[Change] = []
        if event.company_id:
            fold_company(self.companies.setdefault(event.company_id, CompanyRow(event.company_id)), event)
        targets = event.connection_ids
        if event.company_deleted:  # every connection the ledger holds of the company
            targets = sorted(cid for cid, row in self.connections.items() if row.company_id == event.company_id)
        for cid in targets:
            conn = self.connections.setdefault(
                cid,
                ConnectionRow(id=cid, company_id=event.company_id or ""),
            )
            company = self.companies.get(conn.company_id)
            state = ConnectionSlice(
                connection=conn,
                data_types={dt: row for (c, dt), row in self.data_types.items() if c == cid},
                syncs={sid: row for sid, row in self.syncs.items() if row.connection_id == cid},
                company_deleted_at=company.deleted_at if company else None,
            )
            changes.extend(fold(state, event))
            for key in [k for k in self.data_types if k[0] == cid]:
                del self.data_types[key]
            for sid in [s for s, row in self.syncs.items() if row.connection_id == cid]:
                del self.syncs[sid]
            self.data_types.update({(cid, dt): row for dt, row in state.data_types.items()})
            self.syncs.update(state.syncs)
        return changes

    def dump(self) -> dict[str, Any]:
        return {
            "companies": {k: as_values(v) for k, v in sorted(self.companies.items())},
            "connections": {k: as_values(v) for k, v in sorted(self.connections.items())},
            "data_types": {f"{k[0]}/{k[1]}": as_values(v) for k, v in sorted(self.data_types.items())},
            "syncs": {k: as_values(v) for k, v in sorted(self.syncs.items())},
        }
