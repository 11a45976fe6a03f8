"""The audit log of actions, and matching each to the webhook that confirms it (`read.completed` a refresh,
`connection.disconnected` an unlink, `connection.deleted` a delete). The webhook may be folded before or after the
action is recorded, so both sides match (`confirm_actions`, `match_stored_confirmation`); the earliest wins."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, or_, select

from schemas.events import Event, InvalidEnvelope, parse_event
from schemas.statuses import phase_of
from workers.ledger.tables import AuditRecord, WebhookEvent

CONFIRM_SKEW = timedelta(seconds=60)
"""Clock skew allowed: an event stamped up to this much before the action still confirms it."""
STORED_CANDIDATES = 200
CONFIRMING_TYPES = {
    "refresh": ("read.completed", "read.completed.initial", "Data sync completed", "Data Sync Status Changed To Error"),
    "unlink": ("connection.disconnected", "DataConnectionStatusChanged"),
    "delete": ("connection.deleted", "Sync Connection Deleted"),
}


def confirms(record: AuditRecord, event: Event) -> bool:
    """Does `event` report the outcome `record` asked Codat for?"""
    if event.generated_at < record.at - CONFIRM_SKEW:
        return False
    if event.company_id is not None and event.company_id != record.company_id:
        return False
    if record.action == "refresh":
        if record.connection_id is None and event.company_id != record.company_id:
            return False
        return any(
            phase_of(fact.status) != "active"
            and record.connection_id in (None, fact.connection_id)
            and record.data_type in (None, fact.data_type)
            for fact in event.syncs
        )
    for facts in event.connections:
        if facts.id != record.connection_id:
            continue
        if record.action == "unlink" and not facts.deleted and facts.status in ("Unlinked", "Deauthorized"):
            return True
        if record.action == "delete" and facts.deleted:
            return True
    return False


def _mark(session: Session, record: AuditRecord, event: Event) -> None:
    record.confirmed_by_event_id = event.id
    record.confirmed_at = event.generated_at
    session.add(record)
    if record.action == "delete" and record.connection_id:
        # The confirming webhook's body describes the deleted connection too.
        erase_raw_events(session, record.connection_id)


def confirm_actions(session: Session, event: Event) -> list[AuditRecord]:
    """Mark the actions `event` (a folded webhook) confirms; call inside the fold's transaction."""
    if event.source != "webhook" or not event.known or not event.company_id:
        return []
    query = select(AuditRecord).where(
        AuditRecord.company_id == event.company_id,
        AuditRecord.result == "accepted",
        col(AuditRecord.at) <= event.generated_at + CONFIRM_SKEW,
        or_(col(AuditRecord.confirmed_at).is_(None), col(AuditRecord.confirmed_at) > event.generated_at),
    )
    matched = []
    for record in session.exec(query).all():
        if confirms(record, event):
            _mark(session, record, event)
            matched.append(record)
    return matched


def match_stored_confirmation(session: Session, record: AuditRecord) -> bool:
    """Look for a webhook folded before `record` was written that already confirms it."""
    types = CONFIRMING_TYPES.get(record.action)
    if not types or record.result != "accepted":
        return False
    query = select(WebhookEvent).where(
        col(WebhookEvent.event_type).in_(types),
        WebhookEvent.company_id == record.company_id,
        col(WebhookEvent.generated_at) >= record.at - CONFIRM_SKEW,
        col(WebhookEvent.body).is_not(None),
    )
    if record.connection_id and record.action != "refresh":
        query = query.where(WebhookEvent.connection_id == record.connection_id)
    rows = session.exec(query.order_by(col(WebhookEvent.generated_at)).limit(STORED_CANDIDATES)).all()
    for row in rows:
        try:
            event = parse_event(row.body or "", row.id, row.received_at)
        except InvalidEnvelope:
            continue
        if confirms(record, event):
            _mark(session, record, event)
            return True
    return False


def new_record(
    session: Session,
    *,
    action: str,
    actor: str | None,
    at: datetime,
    company_id: str,
    connection_id: str | None,
    data_type: str | None,
    result: str,
    codat_status: int | None,
    detail: str | None,
) -> AuditRecord:
    """Add an audit row and flush, so its id is known (actions name their ledger events after it)."""
    record = AuditRecord(
        at=at,
        actor=actor,
        action=action,
        company_id=company_id,
        connection_id=connection_id,
        data_type=data_type,
        result=result,
        codat_status=codat_status,
        detail=detail,
    )
    session.add(record)
    session.flush()
    return record


def erase_raw_events(session: Session, connection_id: str) -> int:
    """Erase the stored bodies of every webhook about `connection_id` (what "remove completely" erases beyond
    what the fold removes); each stored event stays as a tombstone, so a redelivery is still a duplicate. Returns
    how many."""
    result = session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.connection_id) == connection_id, col(WebhookEvent.body).is_not(None))
        .values(body=None)
        .execution_options(synchronize_session="fetch")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
