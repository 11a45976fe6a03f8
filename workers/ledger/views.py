"""Ledger rows rendered as the API's objects — used by the JSON API and by the change feed alike,
so a dashboard sees one schema whichever way it reads.

A Connection object carries its freshness (`workers.ledger.freshness`), which needs every data type of the
connection, its company's Codat schedules (`workers.ledger.schedules`) and the time it is rendered at:
`load_freshness` reads them for many connections at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Exists, exists, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from schemas.api import CompanyOut, ConnectionDetail, ConnectionOut, DataTypeOut, LinkFailureOut, SyncOut
from schemas.normalise import is_active_error
from workers.ledger.freshness import (
    NO_SCHEDULES,
    ConnectionFreshness,
    DataTypeFreshness,
    FreshnessPolicy,
    Schedules,
    assess,
)
from workers.ledger.rows import ConnectionRow, DataTypeRow, SyncRow
from workers.ledger.schedules import load_schedules
from workers.ledger.tables import Company, Connection, DataTypeState, Sync

IN_CHUNK = 500


def connection_out(
    row: ConnectionRow, company_name: str | None, sync_active: bool, fresh: ConnectionFreshness
) -> ConnectionOut:
    return ConnectionOut(
        id=row.id,
        company_id=row.company_id,
        company_name=company_name,
        platform_key=row.platform_key,
        platform_name=row.platform_name,
        source_type=row.source_type,
        status=row.status,
        created_at=row.created_at,
        linked_at=row.linked_at,
        disconnected_at=row.disconnected_at,
        deleted_at=row.deleted_at,
        first_sync_at=row.first_sync_at,
        last_sync_at=row.last_sync_at,
        last_successful_sync_at=row.last_successful_sync_at,
        last_sync_status=row.last_sync_status,
        sync_active=sync_active,
        link_url=row.link_url,
        metadata=row.connection_info or {},
        errors=row.errors or [],
        active_errors=[entry for entry in row.errors or [] if is_active_error(entry)],
        initial_read_completed_at=row.initial_read_completed_at,
        last_link_failure=_link_failure(row),
        freshness=fresh.freshness,
        expected_by=fresh.expected_by,
        overdue_data_types=list(fresh.overdue_data_types),
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


def sync_out(row: SyncRow) -> SyncOut:
    return SyncOut(
        id=row.id,
        company_id=row.company_id,
        connection_id=row.connection_id,
        data_type=row.data_type,
        status=row.status,
        phase=row.phase,
        requested_at=row.requested_at,
        completed_at=row.completed_at,
        records_modified=row.records_modified,
        issues=row.issues,
        source=row.source,
        event_id=row.event_id,
        delayed=row.delayed,
        codat_status=row.codat_status,
    )


def data_type_out(row: DataTypeRow, fresh: DataTypeFreshness) -> DataTypeOut:
    return DataTypeOut(
        data_type=row.data_type,
        status=row.status,
        phase=row.phase,
        last_sync_at=row.last_sync_at,
        last_successful_sync_at=row.last_successful_sync_at,
        records_modified=row.records_modified,
        freshness=fresh.freshness,
        expected_by=fresh.expected_by,
        threshold_seconds=fresh.threshold.seconds,
        threshold_source=fresh.threshold.source,
    )


DATA_TYPES = DataTypeState.__table__  # type: ignore[attr-defined]


def load_freshness(
    session: Session, connections: Iterable[ConnectionRow], policy: FreshnessPolicy, now: datetime
) -> dict[str, ConnectionFreshness]:
    """Each connection's freshness at `now`, reading all their data types (and, where Codat's schedules
    count, their companies' schedules) in a few statements."""
    rows = {conn.id: conn for conn in connections}
    types: dict[str, list[DataTypeRow]] = {cid: [] for cid in rows}
    ids = sorted(rows)
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        # Plain rows, not ORM objects: this runs in every fold's transaction.
        query = sa_select(DATA_TYPES).where(DATA_TYPES.c.connection_id.in_(chunk))
        for mapping in session.execute(query).mappings():
            types[mapping["connection_id"]].append(DataTypeRow(**mapping))
    schedules = company_schedules(session, {conn.company_id for conn in rows.values()}, policy)
    return {cid: assess(conn, types[cid], policy, now, schedules[conn.company_id]) for cid, conn in rows.items()}


def company_schedules(session: Session, company_ids: Iterable[str], policy: FreshnessPolicy) -> dict[str, Schedules]:
    """The schedules freshness judges these companies' connections by: none unless the policy follows them."""
    if policy.follow_schedules:
        return load_schedules(session, company_ids)
    return {company_id: NO_SCHEDULES for company_id in company_ids}


def active_exists() -> Exists:
    """SQL expression: does the current connection row have a sync in phase `active`?"""
    return exists().where(col(Sync.connection_id) == Connection.id, col(Sync.phase) == "active")


def connection_rows_query() -> Select[Connection, str | None, bool]:
    """Connections with their company name and whether a sync is active, for listing."""
    return select(Connection, Company.name, active_exists().label("sync_active")).join(
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
    fresh = assess(connection, types, policy, now, schedules)
    base = connection_out(connection, company_name, bool(active), fresh)
    judged = {d.data_type: d for d in fresh.data_types}
    return ConnectionDetail(**base.model_dump(), data_types=[data_type_out(t, judged[t.data_type]) for t in types])


def company_out(company: Company, connection_count: int) -> CompanyOut:
    return CompanyOut(
        id=company.id,
        name=company.name,
        connection_count=connection_count,
        deleted_at=company.deleted_at,
        description=company.description,
        tags=company.tags,
    )


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
