"""What an action Codat accepted does to the ledger: one transaction each, folded as a webhook is.

A refused action leaves only a `failed` audit row. An accepted one folds an `Event` of source `action` with id
``audit:{record id}``; a reconnect records only the audit row (its one-time Link URL is never stored). These
functions block (SQL): the web side calls them through a thread pool; `request_refresh` is the whole refresh,
asked of Codat and recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from schemas.codat import PullOperation, pull_operation
from schemas.errors import ErrorCode
from schemas.events import ANY_DATA_TYPE, ConnectionFacts, Event, InvalidEnvelope, SyncFact, connection_facts
from schemas.statuses import CONNECTION_STATUSES
from workers.codat.client import CodatClient
from workers.codat.errors import CodatError
from workers.ledger.announce import announce_changes, company_names
from workers.ledger.audit import erase_raw_events, match_stored_confirmation, new_record
from workers.ledger.changes import FeedEntry
from workers.ledger.fold import Change
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.rows import SyncRow
from workers.ledger.store import fold_events
from workers.ledger.tables import AuditRecord, Connection, DataTypeState

RELINKABLE_STATUSES = tuple(status for status in CONNECTION_STATUSES if status != "Linked")
"""Connections a customer may re-link whatever their syncs say: PendingAuth, Unlinked, Deauthorized."""
RELINK_SYNC_STATUS = "AuthError"
"""A Linked connection whose latest sync of a data type ended so needs its customer to re-link."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    record: AuditRecord
    syncs: list[SyncRow]
    """Syncs the action started, as folded."""
    connection_id: str | None
    entries: list[FeedEntry]
    """What to publish on the change feed once committed."""


def find_connection(engine: Engine, connection_id: str) -> Connection | None:
    with Session(engine) as session:
        return session.get(Connection, connection_id)


def reconnect_refusal(engine: Engine, connection: Connection) -> str | None:
    """Why the customer has no reason to re-link `connection`, or None when they may: it is PendingAuth,
    Unlinked or Deauthorized, or the latest sync of one of its data types ended `AuthError`."""
    if connection.status in RELINKABLE_STATUSES:
        return None
    query = select(DataTypeState.data_type).where(
        DataTypeState.connection_id == connection.id, DataTypeState.status == RELINK_SYNC_STATUS
    )
    with Session(engine) as session:
        if session.exec(query.limit(1)).first() is not None:
            return None
    return (
        f"connection {connection.id!r} is {connection.status or 'of unknown status'} and no data type's latest "
        f"sync ended {RELINK_SYNC_STATUS}: there is nothing to re-link"
    )


def _fold_action(
    session: Session,
    record: AuditRecord,
    at: datetime,
    freshness: FreshnessPolicy,
    syncs: tuple[SyncFact, ...] = (),
    connections: tuple[ConnectionFacts, ...] = (),
) -> tuple[list[Change], list[FeedEntry]]:
    """Fold what Codat accepted as the event ``audit:{record id}``; match a webhook that already confirmed it."""
    event_type = f"action.{record.action}"
    event = Event(
        f"audit:{record.id}", event_type, at, record.company_id, connections=connections, syncs=syncs, source="action"
    )
    changes, slices = fold_events(session, [event])
    names = company_names(session, {record.company_id})
    entries = announce_changes(session, changes, slices, names, freshness, datetime.now(UTC))
    match_stored_confirmation(session, record)
    return changes, entries


def record_failure(
    engine: Engine,
    *,
    action: str,
    actor: str | None,
    at: datetime,
    company_id: str,
    connection_id: str | None,
    data_type: str | None,
    codat_status: int | None,
    detail: str,
    result: str = "failed",
) -> AuditRecord:
    """Record an action Codat refused or never answered (`failed`), or that was never sent to Codat
    (`rate_limited`); nothing else changes."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        return new_record(
            session,
            action=action,
            actor=actor,
            at=at,
            company_id=company_id,
            connection_id=connection_id,
            data_type=data_type,
            codat_status=codat_status,
            detail=detail,
            result=result,
        )


def _linked_connections(session: Session, company_id: str) -> list[str]:
    query = select(Connection.id).where(
        Connection.company_id == company_id, Connection.status == "Linked", col(Connection.deleted_at).is_(None)
    )
    return sorted(session.exec(query).all())


def record_refresh(
    engine: Engine,
    *,
    actor: str | None,
    at: datetime,
    company_id: str,
    data_type: str | None,
    connection_id: str | None,
    codat_status: int,
    operations: list[PullOperation],
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> ActionResult:
    """Record a refresh Codat accepted and start its syncs (phase `active`, source `action`)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        ids = ", ".join(op.id for op in operations)
        connection_id = connection_id or (operations[0].connection_id if len(operations) == 1 else None)
        detail = f"pull operations: {ids}" if ids else "Codat queued every data type of every linked connection"
        record = new_record(
            session,
            action="refresh",
            actor=actor,
            at=at,
            company_id=company_id,
            connection_id=connection_id,
            data_type=data_type,
            codat_status=codat_status,
            detail=detail,
            result="accepted",
        )
        facts = [op.sync_fact() for op in operations if op.company_id == company_id]
        if not operations:
            targets = [connection_id] if connection_id else _linked_connections(session, company_id)
            facts = [SyncFact(c, ANY_DATA_TYPE, "Queued", f"audit:{record.id}:{c}:*", requested_at=at) for c in targets]
        changes, entries = _fold_action(session, record, at, freshness, syncs=tuple(facts))
    started = [change.sync for change in changes if change.kind == "sync.started" and change.sync is not None]
    return ActionResult(record, started, record.connection_id, entries)


async def request_refresh(
    engine: Engine,
    codat: CodatClient,
    *,
    actor: str | None,
    company_id: str,
    data_type: str | None,
    connection_id: str | None,
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> ActionResult:
    """Ask Codat to refresh `data_type` (None: everything) of the company, or of one connection, and record it.
    A refusal is audited as `failed` and raised as its `CodatError`."""
    at = datetime.now(UTC)
    try:
        if data_type is None:
            status, raws = await codat.refresh_all(company_id)
        else:
            status, raw = await codat.refresh_data_type(company_id, data_type, connection_id)
            raws = [raw]
        try:
            operations = [pull_operation(raw) for raw in raws]
        except InvalidEnvelope as exc:
            why = f"Codat's pull operation is unreadable: {exc}"
            raise CodatError(502, ErrorCode.CODAT_ERROR, why, status) from None
    except CodatError as exc:
        await asyncio.to_thread(
            record_failure,
            engine,
            action="refresh",
            actor=actor,
            at=at,
            company_id=company_id,
            connection_id=connection_id,
            data_type=data_type,
            codat_status=exc.codat_status,
            detail=f"{exc.code.value}: {exc.detail}",
        )
        raise
    return await asyncio.to_thread(
        record_refresh,
        engine,
        actor=actor,
        at=at,
        company_id=company_id,
        data_type=data_type,
        connection_id=connection_id,
        codat_status=status,
        operations=operations,
        freshness=freshness,
    )


def _record_connection_action(
    engine: Engine,
    action: str,
    detail: str,
    actor: str | None,
    at: datetime,
    connection: Connection,
    codat_status: int,
    facts: ConnectionFacts | None = None,
    answered_at: datetime | None = None,
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> ActionResult:
    """Audit an accepted action on one connection and fold what Codat said became of it (`facts`, at
    `answered_at`); a delete also erases the connection's raw webhooks."""
    entries: list[FeedEntry] = []
    with Session(engine, expire_on_commit=False) as session, session.begin():
        record = new_record(
            session,
            action=action,
            actor=actor,
            at=at,
            company_id=connection.company_id,
            connection_id=connection.id,
            data_type=None,
            codat_status=codat_status,
            detail=detail,
            result="accepted",
        )
        if facts is not None:
            _, entries = _fold_action(session, record, answered_at or at, freshness, connections=(facts,))
            if facts.deleted:
                erase_raw_events(session, connection.id)
    return ActionResult(record, [], connection.id, entries)


def record_unlink(
    engine: Engine,
    *,
    actor: str | None,
    at: datetime,
    answered_at: datetime,
    connection: Connection,
    codat_status: int,
    answer: dict[str, Any],
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> ActionResult:
    """Record an unlink Codat accepted; fold the connection it returned (history is kept)."""
    try:
        facts = connection_facts(answer)
    except ValueError:
        facts = ConnectionFacts(id=connection.id)
    if facts.id != connection.id or facts.status is None:
        facts = replace(facts, id=connection.id, status="Unlinked")
    detail = f"Codat reports the connection {facts.status}"
    return _record_connection_action(
        engine, "unlink", detail, actor, at, connection, codat_status, facts, answered_at, freshness
    )


def record_delete(
    engine: Engine,
    *,
    actor: str | None,
    at: datetime,
    answered_at: datetime,
    connection: Connection,
    codat_status: int,
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> ActionResult:
    """Record a delete Codat accepted: mark the connection deleted, drop its history and raw bodies."""
    detail = "connection deleted in Codat; its sync history and stored webhook bodies were removed"
    facts = ConnectionFacts(id=connection.id, deleted=True)
    return _record_connection_action(
        engine, "delete", detail, actor, at, connection, codat_status, facts, answered_at, freshness
    )


def record_reconnect(
    engine: Engine,
    *,
    actor: str | None,
    at: datetime,
    connection: Connection,
    codat_status: int,
    codat_connection_status: str | None,
) -> AuditRecord:
    """Record a link Codat issued for `connection`. The link itself is not recorded: whoever holds a
    one-time Link URL can use it, and it is dead once used."""
    seen = f" (Codat reports it {codat_connection_status})" if codat_connection_status else ""
    detail = f"Codat issued a fresh link URL for the connection{seen}"
    return _record_connection_action(engine, "reconnect", detail, actor, at, connection, codat_status).record
