"""Codat's sync schedules as stored (table `sync_schedules`), one row for the client and one per company: read
for freshness (as plain `Schedules`), recorded when `workers.codat.sync_settings` refreshes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlmodel import Session

from schemas.api import as_utc
from workers.ledger.bulk_sql import chunked, insert_rows
from workers.ledger.freshness import Schedules
from workers.ledger.tables import COMPANIES, SyncSchedule

SCHEDULES: Table = SyncSchedule.__table__  # type: ignore[attr-defined]
CLIENT, COMPANY = "client", "company"


def _scope(company_id: str | None) -> tuple[str, str]:
    return (CLIENT, "") if company_id is None else (COMPANY, company_id)


def _recorded(session: Session, column: Any, company_id: str | None) -> Any:
    scope, key = _scope(company_id)
    query = select(column).where(SCHEDULES.c.scope == scope, SCHEDULES.c.company_id == key)
    return session.execute(query).scalar_one_or_none()


def load_schedules(session: Session, company_ids: Iterable[str]) -> dict[str, Schedules]:
    """Each company's `Schedules`: the client's with the company's own (empty where none was read)."""
    ids = sorted(set(company_ids))
    table = SCHEDULES.c
    client = session.execute(select(table.hours).where(table.scope == CLIENT)).scalar_one_or_none() or {}
    own: dict[str, dict[str, float]] = {}
    for chunk in chunked(ids):
        query = select(table.company_id, table.hours).where(table.scope == COMPANY, table.company_id.in_(chunk))
        own.update({company_id: hours for company_id, hours in session.execute(query)})
    return {cid: Schedules(client, own.get(cid, {})) for cid in ids}


def record_schedules(session: Session, company_id: str | None, hours: Mapping[str, float], now: datetime) -> bool:
    """Record the schedules read at `now` for the client (`company_id` None) or one company; True when they
    differ from those recorded before."""
    scope, key = _scope(company_id)
    before = _recorded(session, SCHEDULES.c.hours, company_id)
    row: dict[str, Any] = {"scope": scope, "company_id": key, "hours": dict(hours), "fetched_at": now}
    insert_rows(session, SCHEDULES, [row], conflict=["scope", "company_id"])
    return dict(before or {}) != dict(hours)


def fetched_at(session: Session, company_id: str | None) -> datetime | None:
    """When the client's (`company_id` None) or a company's schedules were last read; None if never."""
    value = _recorded(session, SCHEDULES.c.fetched_at, company_id)
    return None if value is None else as_utc(value)


def companies_due(session: Session, read_before: datetime) -> list[str]:
    """Companies not deleted whose schedules were not read since `read_before`, longest unread first."""
    table = SCHEDULES.c
    joined = COMPANIES.outerjoin(SCHEDULES, (table.scope == COMPANY) & (table.company_id == COMPANIES.c.id))
    query = (
        select(COMPANIES.c.id)
        .select_from(joined)
        .where(COMPANIES.c.deleted_at.is_(None), table.fetched_at.is_(None) | (table.fetched_at < read_before))
        .order_by(table.fetched_at.is_not(None), table.fetched_at, COMPANIES.c.id)
    )
    return list(session.execute(query).scalars())
