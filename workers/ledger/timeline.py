"""A connection's timeline: what happened to it, newest first, from what the ledger already keeps.

Five sources, each of which does not depend on the order webhooks arrived in:

* stored webhooks about the connection (`webhook_events`): created, linked, link failed, disconnected,
  reconnected, deleted, first read completed — at Codat's `generatedDate`;
* its finished syncs (`syncs`): succeeded, failed or stale — at their completion (a stale one at its request);
* the audit log (`audit_log`): refresh, unlink, delete and reconnect requests made through Synctrack (a company's
  refresh of everything counts for each of its connections) — at the request, with its actor;
* the changes of freshness and health that were announced (`connection_state_changes`) — when announced;
* results reconciliation found that no webhook had reported (`missed_webhooks`) — when found.

Items are ordered by time, then by source (`w`, `s`, `m`, `c`, `a`), then by row id as the database orders them, so a
page ends at a position (`time`, `source|id`) the next one starts after, whatever arrives meanwhile at other
times. Each source is read after that position in SQL, at most a page's worth, and the pages merged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
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
SYNC_KINDS: dict[str, TimelineKind] = {"succeeded": "sync_succeeded", "failed": "sync_failed", "stale": "sync_stale"}
Position = tuple[datetime, str]
"""(time, key) of an item: a page ends at one, the next starts after it."""


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    key: str
    item: TimelineItemOut


def load_timeline(
    session: Session, connection: Connection, limit: int, after: Position | None = None
) -> tuple[list[TimelineItemOut], Position | None]:
    """Up to `limit` items older than `after` (newest first), and the position to continue from (None at the end)."""
    platform = connection.platform_name or connection.platform_key
    entries: list[Entry] = []
    for source in (_webhooks, _syncs, _requests, _changes, _missed):
        entries += source(session, connection, platform, limit + 1, after)
    # Stable: rows of one source at one time keep the order the database gave them (its own collation of ids).
    entries.sort(key=lambda e: (e.at, e.key.partition("|")[0]), reverse=True)
    page = entries[:limit]
    more = len(entries) > limit
    return [e.item for e in page], (page[-1].at, page[-1].key) if more and page else None


def _older(
    at: Any, ident: Any, source: str, after: Position | None, parse: Callable[[str], Any] = str
) -> ColumnElement[bool] | None:
    """SQL: rows of `source` that come after `after` in the newest-first order (None: no bound)."""
    if after is None:
        return None
    when, key = after
    prefix, _, rest = key.partition("|")
    if source < prefix:
        return or_(at < when, at == when)
    if source > prefix:
        return at < when  # type: ignore[no-any-return]
    try:
        bound = parse(rest)
    except ValueError:
        return at < when  # type: ignore[no-any-return]
    return or_(at < when, and_(at == when, ident < bound))


def _bounded(query: Any, condition: ColumnElement[bool] | None) -> Any:
    return query if condition is None else query.where(condition)


def _webhooks(
    session: Session, connection: Connection, platform: str | None, limit: int, after: Position | None
) -> list[Entry]:
    types = [*WEBHOOK_KINDS, LEGACY_STATUS_CHANGE]
    query = select(WebhookEvent).where(
        WebhookEvent.connection_id == connection.id,
        col(WebhookEvent.event_type).in_(types),
        col(WebhookEvent.generated_at).is_not(None),
        WebhookEvent.outcome != "failed",
    )
    query = _bounded(query, _older(col(WebhookEvent.generated_at), col(WebhookEvent.id), "w", after))
    query = query.order_by(col(WebhookEvent.generated_at).desc(), col(WebhookEvent.id).desc()).limit(limit)
    entries = []
    for row in session.exec(query).all():
        facts = _facts(row, connection.id)
        kind = WEBHOOK_KINDS.get(row.event_type)
        if row.event_type == LEGACY_STATUS_CHANGE:
            kind = LEGACY_KINDS.get(facts.status or "") if facts else None
        if kind is None or row.generated_at is None:
            continue
        summary = _webhook_summary(kind, _name(platform), facts)
        item = TimelineItemOut(
            at=row.generated_at, kind=kind, summary=summary, data_type=None, event_id=row.id, actor=None
        )
        entries.append(Entry(row.generated_at, f"w|{row.id}", item))
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
    if kind == "created":
        return f"A connection to {platform} was created, waiting for the customer to link it"
    if kind == "linked":
        return f"{_cap(platform)} was linked"
    if kind == "reconnected":
        return f"{_cap(platform)} was reconnected"
    if kind == "deleted":
        return f"The connection to {platform} was deleted"
    if kind == "initial_read_completed":
        return f"The first read of all data from {platform} finished"
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


def _syncs(
    session: Session, connection: Connection, platform: str | None, limit: int, after: Position | None
) -> list[Entry]:
    query = select(Sync).where(Sync.connection_id == connection.id, col(Sync.phase).in_(list(SYNC_KINDS)))
    query = _bounded(query, _older(col(Sync.sort_at), col(Sync.id), "s", after))
    query = query.order_by(col(Sync.sort_at).desc(), col(Sync.id).desc()).limit(limit)
    entries = []
    for row in session.exec(query).all():
        kind = SYNC_KINDS[row.phase]
        data_type = None if row.data_type == "*" else row.data_type
        what = _cap(data_type) if data_type else f"All data from {_name(platform)}"
        if kind == "sync_succeeded":
            summary = f"{what} synced"
        elif kind == "sync_failed":
            summary = f"{what} failed: {row.status}"
        else:
            summary = f"{what}: no result came from Codat in time (stale)"
        item = TimelineItemOut(
            at=row.sort_at, kind=kind, summary=summary, data_type=data_type, event_id=row.event_id, actor=None
        )
        entries.append(Entry(row.sort_at, f"s|{row.id}", item))
    return entries


def _requests(
    session: Session, connection: Connection, platform: str | None, limit: int, after: Position | None
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
    query = _bounded(query, _older(col(AuditRecord.at), col(AuditRecord.id), "a", after, int))
    query = query.order_by(col(AuditRecord.at).desc(), col(AuditRecord.id).desc()).limit(limit)
    entries = []
    for row in session.exec(query).all():
        kind = REQUEST_KINDS[row.action]
        item = TimelineItemOut(
            at=row.at,
            kind=kind,
            summary=_request_summary(row, _name(platform)),
            data_type=row.data_type,
            event_id=f"audit:{row.id}",
            actor=row.actor,
        )
        entries.append(Entry(row.at, f"a|{row.id}", item))
    return entries


def _request_summary(row: AuditRecord, platform: str) -> str:
    what = {
        "refresh": f"A refresh of {row.data_type or f'all data from {platform}'}",
        "unlink": f"Disconnecting {platform}",
        "delete": f"Deleting the connection to {platform}",
        "reconnect": f"A fresh link to reconnect {platform}",
    }[row.action]
    by = f" by {row.actor}" if row.actor else ""
    refused = f" (not done: {row.detail})" if row.result == "failed" and row.detail else ""
    refused = refused or (" (not done)" if row.result == "failed" else "")
    return f"{what} was requested{by}{refused}"


def _changes(
    session: Session, connection: Connection, platform: str | None, limit: int, after: Position | None
) -> list[Entry]:
    query = select(StateChange).where(StateChange.connection_id == connection.id)
    query = _bounded(query, _older(col(StateChange.at), col(StateChange.id), "c", after, int))
    query = query.order_by(col(StateChange.at).desc(), col(StateChange.id).desc()).limit(limit)
    entries = []
    for row in session.exec(query).all():
        kind: TimelineKind = "health_changed" if row.kind == "health_changed" else "freshness_changed"
        noun = "Health" if kind == "health_changed" else "Freshness"
        summary = f"{noun} changed from {row.previous} to {row.current}" if row.previous else f"{noun}: {row.current}"
        item = TimelineItemOut(at=row.at, kind=kind, summary=summary, data_type=None, event_id=row.event_id, actor=None)
        entries.append(Entry(row.at, f"c|{row.id}", item))
    return entries


def _missed(
    session: Session, connection: Connection, platform: str | None, limit: int, after: Position | None
) -> list[Entry]:
    query = select(MissedWebhook).where(MissedWebhook.connection_id == connection.id)
    query = _bounded(query, _older(col(MissedWebhook.found_at), col(MissedWebhook.dataset_id), "m", after))
    query = query.order_by(col(MissedWebhook.found_at).desc(), col(MissedWebhook.dataset_id).desc()).limit(limit)
    entries = []
    for row in session.exec(query).all():
        summary = (
            f"{_cap(row.data_type)} ({row.status}) at {_name(platform)}: no webhook reported it; "
            "reconciliation found it"
        )
        item = TimelineItemOut(
            at=row.found_at,
            kind="recovered_by_reconcile",
            summary=summary,
            data_type=row.data_type,
            event_id=None,
            actor=None,
        )
        entries.append(Entry(row.found_at, f"m|{row.dataset_id}", item))
    return entries


def _name(platform: str | None) -> str:
    return platform or "the platform"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
