"""Store each webhook's raw event and fold it into the ledger in the same transaction, then announce it.

This is what the `fold_webhook` actor runs (through `workers.ingest.batcher`, which hands it many messages at
once: one transaction per batch, each event's store and fold inside it). It is idempotent: a message
delivered twice (dramatiq redelivers after a worker dies) finds its event stored and does nothing; a replay
folds a stored event again, which the fold makes harmless. Input the fold cannot use is stored with outcome
`failed` and not retried — text no database can store (a NUL, a lone surrogate) among it, kept escaped;
anything else (database down) raises so dramatiq retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from schemas.events import Decoded, Event, InvalidEnvelope, UnstorableText, parse_event, parse_time, summarise
from schemas.json_codec import loads
from schemas.storable import escape
from workers.ledger.announce import announce_changes
from workers.ledger.audit import confirm_actions
from workers.ledger.bulk_sql import insert_rows, update_rows
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.store import fold_events
from workers.ledger.tables import AuditRecord, Company, WebhookEvent
from workers.runtime.metrics import record_folds

log = logging.getLogger("synctrack.worker")


@dataclass(frozen=True, slots=True)
class FoldRequest:
    """One `fold_webhook` message: a new webhook (body and receipt time) or a replay of a stored one."""

    message_id: str
    body: str | None
    received_at: str | None
    replay: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    """`processed`, `ignored`, `failed`, `duplicate` (already stored) or `missing` (replay of nothing)."""
    entries: tuple[FeedEntry, ...] = ()


@dataclass
class _Work:
    request: FoldRequest
    event: Event | None = None
    outcome: str = "processed"
    error: str | None = None
    row: dict[str, Any] = field(default_factory=dict)


EVENTS = WebhookEvent.__table__  # type: ignore[attr-defined]


def handle_webhooks(
    engine: Engine,
    feed: ChangeFeed | None,
    requests: Sequence[FoldRequest],
    freshness: FreshnessPolicy = DEFAULT_POLICY,
    companies_created: Callable[[list[str]], None] | None = None,
) -> list[Outcome]:
    """Store and fold a batch of webhooks in one transaction; publish their changes after the commit.

    `freshness`: the thresholds the announced Connection objects are judged by (the worker passes its
    settings'; the default is the settings' default). `companies_created` is told, after the commit, the
    companies whose `company.created` was folded (the worker queues the read of their sync settings).

    Returns one outcome per request, in order. Raises (nothing committed) if the database fails.
    """
    now = datetime.now(UTC)
    outcomes: list[Outcome | _Work] = []
    with Session(engine) as session, session.begin():
        ids = sorted({r.message_id for r in requests})
        stored = {
            row.id: row
            for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500))
            for row in session.execute(
                select(EVENTS.c.id, EVENTS.c.body, EVENTS.c.received_at).where(EVENTS.c.id.in_(chunk))
            )
        }
        seen: set[str] = set()
        new_rows: list[dict[str, Any]] = []
        replayed: list[dict[str, Any]] = []
        work: list[_Work] = []
        for request in requests:
            previous = stored.get(request.message_id)
            if request.message_id in seen or (previous is not None and not request.replay):
                outcomes.append(Outcome("duplicate"))
                continue
            seen.add(request.message_id)
            if previous is None and (request.body is None or request.received_at is None):
                outcomes.append(Outcome("missing"))
                continue
            if previous is not None and previous.body is None:
                outcomes.append(Outcome("missing"))
                continue
            item = _prepare(request, previous, now)
            (replayed if previous is not None else new_rows).append(item.row)
            work.append(item)
            outcomes.append(item)
        insert_rows(session, EVENTS, new_rows)
        update_rows(session, EVENTS, replayed, "id")
        events = [w.event for w in work if w.event is not None and w.event.known]
        changes, slices = fold_events(session, events)
        names = _company_names(session, {s.connection.company_id for s in slices.values()})
        entries = announce_changes(session, changes, slices, names, freshness, now)
        _confirm_actions(session, events)
    if feed is not None:
        feed.publish(entries)
    created = sorted({e.company_id for e in events if e.event_type == "company.created" and e.company_id})
    if companies_created is not None and created:
        try:
            companies_created(created)
        except Exception as exc:  # folded and committed: the daily read of sync settings catches up
            log.warning("msg=sync_settings_not_queued companies=%s error=%s", ",".join(created), type(exc).__name__)
    per_event: dict[str, list[FeedEntry]] = {}
    for entry in entries:
        per_event.setdefault(entry.data.get("event_id", ""), []).append(entry)
    results: list[Outcome] = []
    handled: list[tuple[Event | str | None, str, bool]] = []
    for done in outcomes:
        if isinstance(done, Outcome):
            results.append(done)
            continue
        mine = per_event.get(done.request.message_id, [])
        _log(done, len(mine))
        handled.append((done.event or done.row.get("event_type"), done.outcome, done.request.replay))
        results.append(Outcome(done.outcome, tuple(mine)))
    record_folds(handled, now)
    return results


def handle_webhook(
    engine: Engine,
    feed: ChangeFeed | None,
    message_id: str,
    body: str | None,
    received_at: str | None,
    replay: bool = False,
) -> Outcome:
    """Store and fold one webhook (a batch of one)."""
    return handle_webhooks(engine, feed, [FoldRequest(message_id, body, received_at, replay)])[0]


_NOT_JSON = object()
_NOT_DECODED = object()


def _prepare(request: FoldRequest, previous: Any, now: datetime) -> _Work:
    """Parse one request's body and lay out the row that records it (new, or a replay's update)."""
    item = _Work(request)
    if previous is None:
        assert request.body is not None and request.received_at is not None
        body, received = request.body, parse_time(request.received_at)
        try:
            decoded: Any = loads(body)
        except (ValueError, RecursionError):
            decoded = _NOT_JSON
        summary = None if decoded is _NOT_JSON else summarise(decoded)
        item.row = {
            "id": request.message_id,
            "event_type": summary.event_type if summary else "unknown",
            "envelope_id": summary.envelope_id if summary else None,
            "company_id": summary.company_id if summary else None,
            "connection_id": summary.connection_id if summary else None,
            "received_at": received,
            "body": body,
        }
    else:
        body, received = previous.body, previous.received_at
        item.row = {"id": request.message_id}
        decoded = _NOT_DECODED
    try:
        # The body decoded once for both the summary and the parse (a body that is not JSON raises here).
        source = body if decoded is _NOT_DECODED or decoded is _NOT_JSON else Decoded(decoded, body)
        item.event = parse_event(source, request.message_id, received)
        item.outcome = "processed" if item.event.known else "ignored"
        item.error = None if item.event.known else item.event.reason
    except InvalidEnvelope as exc:
        item.outcome, item.error = "failed", str(exc)
        if isinstance(exc, UnstorableText):
            # Stored all the same (acknowledged means stored), every text column in a form any database takes.
            item.row.update({k: escape(v) for k, v in item.row.items() if isinstance(v, str)})
    item.row.update(
        outcome=item.outcome,
        error=item.error,
        generated_at=item.event.generated_at if item.event else None,
        processed_at=now,
    )
    return item


def _company_names(session: Session, company_ids: set[str]) -> dict[str, str | None]:
    if not company_ids:
        return {}
    table = Company.__table__  # type: ignore[attr-defined]
    rows = session.execute(select(table.c.id, table.c.name).where(table.c.id.in_(sorted(company_ids))))
    return {row.id: row.name for row in rows}


def _confirm_actions(session: Session, events: list[Event]) -> None:
    """Match actions awaiting confirmation; only companies with accepted actions are looked at."""
    companies = sorted({e.company_id for e in events if e.company_id})
    if not companies:
        return
    table = AuditRecord.__table__  # type: ignore[attr-defined]
    pending = set(
        session.execute(
            select(table.c.company_id).where(table.c.company_id.in_(companies), table.c.result == "accepted").distinct()
        ).scalars()
    )
    for event in events:
        if event.company_id in pending:
            confirm_actions(session, event)


def _log(item: _Work, changes: int) -> None:
    event = item.event
    if event is None:
        log.warning(
            "event=%s company=%s connection=%s outcome=failed error=%r",
            item.request.message_id,
            item.row.get("company_id") or "-",
            item.row.get("connection_id") or "-",
            item.error,
        )
        return
    log.info(
        "event=%s type=%r company=%s connection=%s outcome=%s changes=%d replay=%s",
        event.id,
        event.event_type,
        event.company_id,
        ",".join(event.connection_ids) or "-",
        item.outcome,
        changes,
        item.request.replay,
    )
