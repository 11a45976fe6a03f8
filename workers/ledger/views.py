"""Ledger rows rendered as the API's objects — used by the JSON API and by the change feed alike,
so a dashboard sees one schema whichever way it reads."""

from __future__ import annotations

from sqlalchemy import Exists, exists
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from schemas.api import ConnectionDetail, ConnectionOut, DataTypeOut, SyncOut
from workers.ledger.rows import ConnectionRow, DataTypeRow, SyncRow
from workers.ledger.tables import Company, Connection, DataTypeState, Sync


def connection_out(row: Connection | ConnectionRow, company_name: str | None, sync_active: bool) -> ConnectionOut:
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
    )


def sync_out(row: Sync | SyncRow) -> SyncOut:
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
    )


def data_type_out(row: DataTypeState | DataTypeRow) -> DataTypeOut:
    return DataTypeOut(
        data_type=row.data_type,
        status=row.status,
        phase=row.phase,
        last_sync_at=row.last_sync_at,
        last_successful_sync_at=row.last_successful_sync_at,
        records_modified=row.records_modified,
    )


def active_exists() -> Exists:
    """SQL expression: does the current connection row have a sync in phase `active`?"""
    return exists().where(col(Sync.connection_id) == Connection.id, col(Sync.phase) == "active")


def connection_rows_query() -> Select[Connection, str | None, bool]:
    """Connections with their company name and whether a sync is active, for listing."""
    return select(Connection, Company.name, active_exists().label("sync_active")).join(
        Company, col(Company.id) == Connection.company_id, isouter=True
    )


def load_connection(session: Session, connection_id: str) -> ConnectionOut | None:
    row = session.exec(connection_rows_query().where(Connection.id == connection_id)).first()
    if row is None:
        return None
    connection, company_name, active = row
    return connection_out(connection, company_name, bool(active))


def load_connection_detail(session: Session, connection_id: str) -> ConnectionDetail | None:
    base = load_connection(session, connection_id)
    if base is None:
        return None
    types = session.exec(
        select(DataTypeState).where(DataTypeState.connection_id == connection_id).order_by(col(DataTypeState.data_type))
    ).all()
    return ConnectionDetail(**base.model_dump(), data_types=[data_type_out(t) for t in types])
