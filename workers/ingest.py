"""One webhook, one transaction: store the raw event, fold it into the ledger, then announce it.

This is what the `fold_webhook` actor runs. It is idempotent: a message delivered twice (dramatiq
redelivers after a worker dies) finds its event stored and does nothing; a replay folds a stored
event again, which the fold makes harmless. Input the fold cannot use is stored with outcome
`failed` and not retried; anything else (database down) raises so dramatiq retries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlmodel import Session

from schemas.events import InvalidEnvelope, envelope_summary, parse_event, parse_time
from workers.changes import ChangeFeed, FeedEntry, render
from workers.ledger import Company, WebhookEvent
from workers.store import fold_event

log = logging.getLogger("synctrack.worker")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    """`processed`, `ignored`, `failed`, `duplicate` (already stored) or `missing` (replay of nothing)."""
    entries: tuple[FeedEntry, ...] = ()


def _summary(body: str) -> tuple[str, str | None, str | None, str | None]:
    """Best-effort (event type, envelope id, company, connection) for storing even a bad event."""
    try:
        raw = json.loads(body)
        event_type, envelope_id = envelope_summary(raw)
    except (ValueError, InvalidEnvelope):
        return "unknown", None, None, None
    payload = raw.get("payload") or {}
    company = raw.get("CompanyId") or (payload.get("referenceCompany") or {}).get("id")
    connection = raw.get("DataConnectionId") or (payload.get("connection") or {}).get("id")
    if connection is None:
        items = payload.get("dataTypes")
        if isinstance(items, list) and items and isinstance(items[0], dict):
            connection = items[0].get("connectionId")
    return event_type, envelope_id, company, connection


def handle_webhook(
    engine: Engine,
    feed: ChangeFeed | None,
    message_id: str,
    body: str | None,
    received_at: str | None,
    replay: bool = False,
) -> Outcome:
    """Store and fold one webhook; publish its changes after the commit."""
    now = datetime.now(UTC)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        stored = session.get(WebhookEvent, message_id)
        if stored is not None and not replay:
            return Outcome("duplicate")
        if stored is None:
            if body is None or received_at is None:
                return Outcome("missing")
            event_type, envelope_id, company_id, connection_id = _summary(body)
            stored = WebhookEvent(
                id=message_id,
                event_type=event_type,
                envelope_id=envelope_id,
                company_id=company_id if isinstance(company_id, str) else None,
                connection_id=connection_id if isinstance(connection_id, str) else None,
                received_at=parse_time(received_at),
                body=body,
            )
            session.add(stored)
        if stored.body is None:
            return Outcome("missing")
        try:
            event = parse_event(stored.body, message_id, stored.received_at)
        except InvalidEnvelope as exc:
            stored.outcome, stored.error, stored.processed_at = "failed", str(exc), now
            log.warning("event=%s outcome=failed error=%r", message_id, str(exc))
            return Outcome("failed")
        stored.generated_at = event.generated_at
        stored.error = None
        entries: list[FeedEntry] = []
        if event.known:
            changes, slices = fold_event(session, event)
            company = session.get(Company, event.company_id) if event.company_id else None
            entries = render(changes, slices, event, company.name if company else None)
            stored.outcome = "processed"
        else:
            stored.outcome = "ignored"
        stored.processed_at = now
    if feed is not None:
        feed.publish(entries)
    log.info(
        "event=%s type=%s company=%s connection=%s outcome=%s changes=%d replay=%s",
        message_id,
        event.event_type,
        event.company_id,
        ",".join(event.connection_ids) or "-",
        stored.outcome,
        len(entries),
        replay,
    )
    return Outcome(stored.outcome, tuple(entries))
