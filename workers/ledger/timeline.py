"""A connection's timeline, newest first, from stored webhooks, finished syncs, the audit log's requests, announced
freshness and health changes, and results only reconciliation found. Items are ordered by time, source (`w`, `s`,
`m`, `c`, `a`) and row id, so a page ends at a position (`time`, `source|id`) the next starts after."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from schemas.api import TimelineItemOut
from schemas.events import ConnectionFacts, InvalidEnvelope, parse_event
from schemas.statuses import TimelineKind
from workers.ledger.tables import AuditRecord, Connection, MissedWebhook, StateChange, Sync, WebhookEvent

WEBHOOK_KINDS: dict[str, TimelineKind] = {
    "connection.created": "created",
    "connection.connected": "linked",
    "connection.failed": "link_failed",
    "connection.disconnected": "disconnected",
    "connection.reconnected": "reconnected",
    "connection.deleted": "deleted",
    "Sync Connection Deleted": "deleted",
    "read.completed.initial": "initial_read_completed",
}
WEBHOOK_SUMMARIES: dict[TimelineKind, str] = {
    "created": "A connection to {platform} was created, waiting for the customer to link it",
    "linked": "{Platform} was linked",
    "reconnected": "{Platform} was reconnected",
    "deleted": "The connection to {platform} was deleted",
    "initial_read_completed": "The first read of all data from {platform} finished",
}
LEGACY_STATUS_CHANGE = "DataConnectionStatusChanged"
LEGACY_KINDS: dict[str, TimelineKind] = {
    "PendingAuth": "created",
    "Linked": "linked",
    "Unlinked": "disconnected",
    "Deauthorized": "disconnected",
}
REQUEST_KINDS: dict[str, TimelineKind] = {
    "refresh": "refresh_requested",
    "unlink": "unlink_requested",
    "delete": "delete_requested",
    "reconnect": "reconnect_requested",
}
SYNC_KINDS: dict[str, tuple[TimelineKind, str]] = {
    "succeeded": ("sync_succeeded", "{what} synced"),
    "failed": ("sync_failed", "{what} failed: {status}"),
    "stale": ("sync_stale", "{what}: no result came from Codat in time (stale)"),
}
Position = tuple[datetime, str]
"""(time, key) of an item: a page ends at one, the next starts after it."""
Entry = tuple[str, TimelineItemOut]
"""An item and its key, `source|row id`."""


def _entry(
    at: datetime,
    key: str,
    kind: TimelineKind,
    summary: str,
    data_type: str | None = None,
    event_id: str | None = None,
    actor: str | None = None,
) -> Entry:
    return key, TimelineItemOut(at=at, kind=kind, summary=summary, data_type=data_type, event_id=event_id, actor=actor)


def load_timeline(
    session: Session, connection: Connection, limit: int, after: Position | None = None
) -> tuple[list[TimelineItemOut], Position | None]:
    """Up to `limit` items older than `after` (newest first), and the position to continue from (None at the end)."""
    platform = connection.platform_name or connection.platform_key or "the platform"
    entries: list[Entry] = []
    for source in (_webhooks, _syncs, _requests, _changes, _missed):
        entries += source(session, connection, platform, limit + 1, after)
    # Stable: rows of one source at one time keep the order the database gave them (its own collation of ids).
    entries.sort(key=lambda e: (e[1].at, e[0].partition("|")[0]), reverse=True)
    page = entries[:limit]
    more = len(entries) > limit
    return [item for _, item in page], (page[-1][1].at, page[-1][0]) if more and page else None


def _page(
    session: Session, query: Any, at: Any, ident: Any, source: str, limit: int, after: Position | None
) -> Sequence[Any]:
    """Up to `limit` rows of `query` that come after `after` in the newest-first order (by `at`, then `ident`)."""
    if after is not None:
        when, key = after
        prefix, _, rest = key.partition("|")
        older = at < when
        if source < prefix:
            older = at <= when
        elif source == prefix:
            parse = int if ident.type.python_type is int else str
            try:
                older = or_(older, and_(at == when, ident < parse(rest)))
            except ValueError:
                pass
        query = query.where(older)
    rows: Sequence[Any] = session.exec(query.order_by(at.desc(), ident.desc()).limit(limit)).all()
    return rows


def _webhooks(
    session: Session, connection: Connection, platform: str, limit: int, after: Position | None
) -> list[Entry]:
    query = select(WebhookEvent).where(
        WebhookEvent.connection_id == connection.id,
        col(WebhookEvent.event_type).in_([*WEBHOOK_KINDS, LEGACY_STATUS_CHANGE]),
        col(WebhookEvent.generated_at).is_not(None),
        WebhookEvent.outcome != "failed",
    )
    entries = []
    for row in _page(session, query, col(WebhookEvent.generated_at), col(WebhookEvent.id), "w", limit, after):
        facts = _facts(row, connection.id)
        kind = WEBHOOK_KINDS.get(row.event_type)
        if row.event_type == LEGACY_STATUS_CHANGE:
            kind = LEGACY_KINDS.get(facts.status or "") if facts else None
        if kind is not None and row.generated_at is not None:
            summary = _webhook_summary(kind, platform, facts)
            entries.append(_entry(row.generated_at, f"w|{row.id}", kind, summary, event_id=row.id))
    return entries


def _facts(row: WebhookEvent, connection_id: str) -> ConnectionFacts | None:
    """What the stored body says of the connection (None once its body was pruned, or if it cannot be read)."""
    if row.body is None:
        return None
    try:
        event = parse_event(row.body, row.id, row.received_at)
    except InvalidEnvelope:
        return None
    return next((facts for facts in event.connections if facts.id == connection_id), None)


def _webhook_summary(kind: TimelineKind, platform: str, facts: ConnectionFacts | None) -> str:
    if kind in WEBHOOK_SUMMARIES:
        return WEBHOOK_SUMMARIES[kind].format(platform=platform, Platform=_cap(platform))
    if kind == "link_failed":
        failure = facts.link_failure if facts else None
        why = failure and (failure.message or failure.status_text or failure.status_code)
        return f"Linking {platform} failed{f': {why}' if why else ''}"
    status = facts.status if facts else None
    if status == "Deauthorized":
        return f"{_cap(platform)} withdrew Codat's access (Deauthorized)"
    if status == "Unlinked":
        return f"{_cap(platform)} was disconnected by the customer"
    return f"{_cap(platform)} was disconnected"


def _syncs(session: Session, connection: Connection, platform: str, limit: int, after: Position | None) -> list[Entry]:
    query = select(Sync).where(Sync.connection_id == connection.id, col(Sync.phase).in_(list(SYNC_KINDS)))
    entries = []
    for row in _page(session, query, col(Sync.sort_at), col(Sync.id), "s", limit, after):
        kind, summary = SYNC_KINDS[row.phase]
        data_type = None if row.data_type == "*" else row.data_type
        what = _cap(data_type) if data_type else f"All data from {platform}"
        summary = summary.format(what=what, status=row.status)
        entries.append(_entry(row.sort_at, f"s|{row.id}", kind, summary, data_type, row.event_id))
    return entries


def _requests(
    session: Session, connection: Connection, platform: str, limit: int, after: Position | None
) -> list[Entry]:
    everything = and_(
        col(AuditRecord.connection_id).is_(None),
        col(AuditRecord.company_id) == connection.company_id,
        col(AuditRecord.action) == "refresh",
    )
    query = select(AuditRecord).where(
        or_(col(AuditRecord.connection_id) == connection.id, everything),
        col(AuditRecord.action).in_(list(REQUEST_KINDS)),
    )
    return [
        _entry(
            row.at,
            f"a|{row.id}",
            REQUEST_KINDS[row.action],
            _request_summary(row, platform),
            row.data_type,
            f"audit:{row.id}",
            row.actor,
        )
        for row in _page(session, query, col(AuditRecord.at), col(AuditRecord.id), "a", limit, after)
    ]


def _request_summary(row: AuditRecord, platform: str) -> str:
    what = {
        "refresh": f"A refresh of {row.data_type or f'all data from {platform}'}",
        "unlink": f"Disconnecting {platform}",
        "delete": f"Deleting the connection to {platform}",
        "reconnect": f"A fresh link to reconnect {platform}",
    }[row.action]
    by = f" by {row.actor}" if row.actor else ""
    refused = (f" (not done: {row.detail})" if row.detail else " (not done)") if row.result == "failed" else ""
    return f"{what} was requested{by}{refused}"


def _changes(
    session: Session, connection: Connection, platform: str, limit: int, after: Position | None
) -> list[Entry]:
    query = select(StateChange).where(StateChange.connection_id == connection.id)
    entries = []
    for row in _page(session, query, col(StateChange.at), col(StateChange.id), "c", limit, after):
        kind: TimelineKind = "health_changed" if row.kind == "health_changed" else "freshness_changed"
        noun = "Health" if kind == "health_changed" else "Freshness"
        summary = f"{noun} changed from {row.previous} to {row.current}" if row.previous else f"{noun}: {row.current}"
        entries.append(_entry(row.at, f"c|{row.id}", kind, summary, event_id=row.event_id))
    return entries


def _missed(session: Session, connection: Connection, platform: str, limit: int, after: Position | None) -> list[Entry]:
    query = select(MissedWebhook).where(MissedWebhook.connection_id == connection.id)
    rows = _page(session, query, col(MissedWebhook.found_at), col(MissedWebhook.dataset_id), "m", limit, after)
    return [
        _entry(
            row.found_at,
            f"m|{row.dataset_id}",
            "recovered_by_reconcile",
            f"{_cap(row.data_type)} ({row.status}) at {platform}: no webhook reported it; reconciliation found it",
            row.data_type,
        )
        for row in rows
    ]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
