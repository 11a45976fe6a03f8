"""Ledger rows rendered as the API's objects, for the JSON API and the change feed alike (one schema). A Connection
carries its `Assessment` (freshness and health), which needs its data types, its company's schedules, whether a sync
is active and the time; `load_assessments` reads them for many at once."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import exists, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from schemas.api import CompanyOut, ConnectionDetail, ConnectionOut, DataTypeOut, LinkFailureOut, SyncOut
from schemas.normalise import is_active_error
from workers.ledger.bulk_sql import chunked
from workers.ledger.connection_health import ConnectionHealth, deauthorization_risk_at, judge
from workers.ledger.durations import Timing, expected_completion
from workers.ledger.freshness import (
    NO_SCHEDULES,
    ConnectionFreshness,
    DataTypeFreshness,
    FreshnessPolicy,
    Schedules,
    assess,
)
from workers.ledger.rows import ConnectionRow, DataTypeRow, SyncRow, column_names
from workers.ledger.schedules import load_schedules
from workers.ledger.tables import DATA_TYPES, Company, Connection, DataTypeState, PlatformIncident, Sync


@dataclass(frozen=True, slots=True)
class Assessment:
    """A connection judged at one moment: its freshness, its health and when Codat may deauthorize it."""

    freshness: ConnectionFreshness
    health: ConnectionHealth
    deauthorization_risk_at: datetime | None


def assess_connection(
    connection: ConnectionRow,
    data_types: Iterable[DataTypeRow],
    sync_active: bool,
    policy: FreshnessPolicy,
    now: datetime,
    schedules: Schedules = NO_SCHEDULES,
    incident_since: datetime | None = None,
) -> Assessment:
    """Pure: the connection's `Assessment`; `incident_since`: when its platform's open incident's failures begin."""
    types = list(data_types)
    return Assessment(
        assess(connection, types, policy, now, schedules),
        judge(connection, types, sync_active, incident_since),
        deauthorization_risk_at(connection, policy.deauthorize_after),
    )


M = TypeVar("M", bound=BaseModel)


@cache
def _shared(model: type[BaseModel], row_type: type) -> tuple[str, ...]:
    return tuple(name for name in model.model_fields if name in column_names(row_type))


def _out(model: type[M], row: Any, **extra: Any) -> M:
    """`model` from the row's columns of the same names, and `extra`."""
    copied = {name: getattr(row, name) for name in _shared(model, row.__class__) if name not in extra}
    return model(**copied, **extra)


def connection_out(
    row: ConnectionRow, company_name: str | None, sync_active: bool, assessed: Assessment
) -> ConnectionOut:
    fresh, health = assessed.freshness, assessed.health
    return _out(
        ConnectionOut,
        row,
        company_name=company_name,
        sync_active=sync_active,
        metadata=row.connection_info or {},
        errors=row.errors or [],
        active_errors=[entry for entry in row.errors or [] if is_active_error(entry)],
        last_link_failure=_link_failure(row),
        freshness=fresh.freshness,
        expected_by=fresh.expected_by,
        overdue_data_types=list(fresh.overdue_data_types),
        health=health.health,
        health_reason=health.reason,
        next_action=health.next_action,
        health_data_type=health.data_type,
        deauthorization_risk_at=assessed.deauthorization_risk_at,
    )


def _link_failure(row: ConnectionRow) -> LinkFailureOut | None:
    if row.last_link_failure_at is None:
        return None
    failure = row.last_link_failure or {}
    return LinkFailureOut(
        at=row.last_link_failure_at,
        status_code=failure.get("status_code"),
        status_text=failure.get("status_text"),
        message=failure.get("message"),
    )


def sync_out(row: SyncRow, timing: Timing | None = None) -> SyncOut:
    """A Sync object; `timing` (`workers.ledger.durations.load_timings`) adds a derived `requested_at` and an
    active sync's typical duration."""
    requested_at = row.requested_at or (timing.requested_at if timing else None)
    typical = timing.typical_duration_seconds if timing and row.phase == "active" else None
    return _out(
        SyncOut,
        row,
        requested_at=requested_at,
        typical_duration_seconds=typical,
        expected_completion_at=expected_completion(requested_at, typical),
    )


def data_type_out(row: DataTypeRow, fresh: DataTypeFreshness) -> DataTypeOut:
    return _out(
        DataTypeOut,
        row,
        freshness=fresh.freshness,
        expected_by=fresh.expected_by,
        threshold_seconds=fresh.threshold.seconds,
        threshold_source=fresh.threshold.source,
    )


def load_data_types(session: Session, connection_ids: Iterable[str]) -> dict[str, list[DataTypeRow]]:
    """Every data type of these connections, as plain rows (this runs in every fold's transaction)."""
    ids = sorted(set(connection_ids))
    types: dict[str, list[DataTypeRow]] = {cid: [] for cid in ids}
    for chunk in chunked(ids):
        query = sa_select(DATA_TYPES).where(DATA_TYPES.c.connection_id.in_(chunk))
        for mapping in session.execute(query).mappings():
            types[mapping["connection_id"]].append(DataTypeRow(**mapping))
    return types


def load_assessments(
    session: Session,
    connections: Iterable[ConnectionRow],
    active: Collection[str],
    policy: FreshnessPolicy,
    now: datetime,
) -> dict[str, Assessment]:
    """Each connection's `Assessment` at `now`, read in a few statements; `active`: those with an active sync."""
    rows = {conn.id: conn for conn in connections}
    types = load_data_types(session, rows)
    schedules = company_schedules(session, {conn.company_id for conn in rows.values()}, policy)
    incidents = open_incidents(session)
    return {
        cid: assess_connection(
            conn,
            types[cid],
            cid in active,
            policy,
            now,
            schedules[conn.company_id],
            incidents.get(conn.platform_key or ""),
        )
        for cid, conn in rows.items()
    }


def open_incidents(session: Session) -> dict[str, datetime]:
    """Platform key -> when the failures its open incident counts begin, for every platform with one."""
    query = select(PlatformIncident.platform_key, PlatformIncident.failures_since).where(
        col(PlatformIncident.closed_at).is_(None)
    )
    return dict(session.exec(query).all())


def company_schedules(session: Session, company_ids: Iterable[str], policy: FreshnessPolicy) -> dict[str, Schedules]:
    """The schedules freshness judges these companies' connections by: none unless the policy follows them."""
    if policy.follow_schedules:
        return load_schedules(session, company_ids)
    return {company_id: NO_SCHEDULES for company_id in company_ids}


def connection_rows_query() -> Select[Connection, str | None, bool]:
    """Connections with their company name and whether a sync is active, for listing."""
    active = exists().where(col(Sync.connection_id) == Connection.id, col(Sync.phase) == "active")
    return select(Connection, Company.name, active.label("sync_active")).join(
        Company, col(Company.id) == Connection.company_id, isouter=True
    )


def load_connection(
    session: Session, connection_id: str, policy: FreshnessPolicy, now: datetime
) -> ConnectionOut | None:
    detail = load_connection_detail(session, connection_id, policy, now)
    return None if detail is None else ConnectionOut(**detail.model_dump(exclude={"data_types"}))


def load_connection_detail(
    session: Session, connection_id: str, policy: FreshnessPolicy, now: datetime
) -> ConnectionDetail | None:
    row = session.exec(connection_rows_query().where(Connection.id == connection_id)).first()
    if row is None:
        return None
    connection, company_name, active = row
    types = session.exec(
        select(DataTypeState).where(DataTypeState.connection_id == connection_id).order_by(col(DataTypeState.data_type))
    ).all()
    schedules = company_schedules(session, [connection.company_id], policy)[connection.company_id]
    since = open_incidents(session).get(connection.platform_key or "")
    assessed = assess_connection(connection, types, bool(active), policy, now, schedules, since)
    base = connection_out(connection, company_name, bool(active), assessed)
    judged = {d.data_type: d for d in assessed.freshness.data_types}
    return ConnectionDetail(**base.model_dump(), data_types=[data_type_out(t, judged[t.data_type]) for t in types])


def company_out(company: Company, connection_count: int) -> CompanyOut:
    return _out(CompanyOut, company, connection_count=connection_count)


def company_rows_query() -> Select[Company, int]:
    """Companies with their count of connections not deleted, in id order, for listing."""
    counts = (
        select(Connection.company_id, func.count().label("n"))
        .where(col(Connection.deleted_at).is_(None))
        .group_by(col(Connection.company_id))
        .subquery()
    )
    return (
        select(Company, func.coalesce(counts.c.n, 0))
        .join(counts, counts.c.company_id == Company.id, isouter=True)
        .order_by(col(Company.id))
    )


def load_companies(session: Session, company_ids: Iterable[str]) -> list[CompanyOut]:
    """These companies (those the ledger holds), in id order."""
    ids = sorted(set(company_ids))
    if not ids:
        return []
    rows = session.exec(company_rows_query().where(col(Company.id).in_(ids))).all()
    return [company_out(company, count) for company, count in rows]
