"""Store each webhook's raw event and fold it into the ledger in one transaction, then announce its changes.

Idempotent: a message delivered twice finds its event stored and does nothing. A body the fold cannot use is stored
with outcome `failed` and not retried; anything else (the database down) raises, so dramatiq retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Row, select
from sqlmodel import Session

from schemas.events import Decoded, Event, InvalidEnvelope, UnstorableText, parse_event, parse_time, summarise
from schemas.json_codec import loads
from schemas.storable import escape
from workers.ledger.announce import announce_changes, company_names
from workers.ledger.audit import confirm_actions
from workers.ledger.bulk_sql import chunked, insert_rows, update_rows
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.durations import DurationMemo
from workers.ledger.fold import Change, ConnectionSlice
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.platform_incidents import IncidentSettings, check_after_fold
from workers.ledger.store import fold_events
from workers.ledger.tables import AuditRecord, WebhookEvent
from workers.runtime.metrics import record_folds, record_latency

log = logging.getLogger("synctrack.worker")

EVENTS = WebhookEvent.__table__  # type: ignore[attr-defined]


class FoldOutcome(StrEnum):
    """What became of one request. Stored as the event's `outcome`: processed (folded), ignored (a Codat event that
    changes nothing; its `error` says why), failed (not a documented Codat payload). Not stored: duplicate (already
    stored, or twice in the batch), missing (a replay of an event not stored, or whose body retention removed)."""

    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class FoldRequest:
    """One `fold_webhook` message: a new webhook (body and receipt time) or a replay of a stored one."""

    message_id: str
    body: str | None
    received_at: str | None
    replay: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    status: FoldOutcome
    entries: tuple[FeedEntry, ...] = ()  # what the fold announced for this event


@dataclass(frozen=True, slots=True)
class _Stored:
    """A request to store (a replay: to update) and fold if it parsed; `row` holds the `webhook_events` columns to
    write (the whole row for a new event, the outcome for a replay)."""

    request: FoldRequest
    row: dict[str, Any]
    event: Event | None
    outcome: FoldOutcome


def handle_webhooks(
    engine: Engine,
    feed: ChangeFeed | None,
    requests: Sequence[FoldRequest],
    freshness: FreshnessPolicy = DEFAULT_POLICY,
    companies_created: Callable[[list[str]], None] | None = None,
    durations: DurationMemo | None = None,
    incidents: IncidentSettings | None = None,
) -> list[Outcome]:
    """Store and fold a batch of webhooks in one transaction, then publish their changes; return one outcome per
    request, in order. Raises (nothing committed) if the database fails. After the commit, `companies_created` is
    told of folded `company.created` companies and, with `incidents`, changed platforms are checked for incidents."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        plans = _plan(requests, _stored_bodies(session, requests), now)
        stored = [plan for plan in plans if isinstance(plan, _Stored)]
        insert_rows(session, EVENTS, [s.row for s in stored if not s.request.replay])
        update_rows(session, EVENTS, [s.row for s in stored if s.request.replay], "id")
        events = [s.event for s in stored if s.event is not None and s.event.known]
        changes, slices = fold_events(session, events)
        names = company_names(session, {s.connection.company_id for s in slices.values()})
        entries = announce_changes(session, changes, slices, names, freshness, now, durations)
        _confirm_actions(session, events)
    _publish(feed, entries, stored)
    if companies_created is not None:
        _tell_companies_created(companies_created, events)
    if incidents is not None:
        _check_incidents(engine, feed, incidents, freshness, now, changes, slices)
    return _outcomes(plans, entries, now)


def handle_webhook(engine: Engine, feed: ChangeFeed | None, message_id: str, body: str, received_at: str) -> Outcome:
    """Store and fold one new webhook (a batch of one)."""
    return handle_webhooks(engine, feed, [FoldRequest(message_id, body, received_at)])[0]


def _stored_bodies(session: Session, requests: Sequence[FoldRequest]) -> dict[str, Row[Any]]:
    """The stored event (id, body, received_at) of each request that has one."""
    ids = sorted({r.message_id for r in requests})
    query = select(EVENTS.c.id, EVENTS.c.body, EVENTS.c.received_at)
    return {row.id: row for chunk in chunked(ids) for row in session.execute(query.where(EVENTS.c.id.in_(chunk)))}


def _plan(requests: Sequence[FoldRequest], stored: dict[str, Row[Any]], now: datetime) -> list[Outcome | _Stored]:
    """Per request: its outcome already (a duplicate, a replay of nothing), or what to store and fold."""
    plans: list[Outcome | _Stored] = []
    seen: set[str] = set()
    for request in requests:
        previous = stored.get(request.message_id)
        if request.message_id in seen or (previous is not None and not request.replay):
            plans.append(Outcome(FoldOutcome.DUPLICATE))
            continue
        seen.add(request.message_id)
        if previous is None:
            new = request.body is not None and request.received_at is not None
            plans.append(_read_new(request, now) if new else Outcome(FoldOutcome.MISSING))
        elif previous.body is None:
            plans.append(Outcome(FoldOutcome.MISSING))
        else:
            plans.append(_parse(request, {"id": request.message_id}, previous.body, previous.received_at, now))
    return plans


def _read_new(request: FoldRequest, now: datetime) -> _Stored:
    """A new webhook: its whole row, what its envelope says indexed beside the body (the body decoded once)."""
    assert request.body is not None and request.received_at is not None
    body: str | Decoded = request.body
    try:
        body = Decoded(loads(request.body), request.body)
    except (ValueError, RecursionError):
        pass  # not JSON: the parse says so
    summary = summarise(body.value) if isinstance(body, Decoded) else None
    received = parse_time(request.received_at)
    row = {
        "id": request.message_id,
        "event_type": summary.event_type if summary else "unknown",
        "envelope_id": summary.envelope_id if summary else None,
        "company_id": summary.company_id if summary else None,
        "connection_id": summary.connection_id if summary else None,
        "received_at": received,
        "body": request.body,
    }
    return _parse(request, row, body, received, now)


def _parse(
    request: FoldRequest, row: dict[str, Any], body: str | Decoded, received: datetime, now: datetime
) -> _Stored:
    """Normalise one body into its event and complete its row with the outcome."""
    event: Event | None = None
    try:
        event = parse_event(body, request.message_id, received)
        outcome = FoldOutcome.PROCESSED if event.known else FoldOutcome.IGNORED
        error = event.reason if not event.known else None
    except InvalidEnvelope as exc:
        outcome, error = FoldOutcome.FAILED, str(exc)
        if isinstance(exc, UnstorableText):
            # Stored all the same (acknowledged means stored), every text column in a form any database takes.
            row = {k: escape(v) if isinstance(v, str) else v for k, v in row.items()}
    generated_at = event.generated_at if event else None
    row = dict(row, outcome=outcome.value, error=error, generated_at=generated_at, processed_at=now)
    return _Stored(request, row, event, outcome)


def _publish(feed: ChangeFeed | None, entries: list[FeedEntry], stored: list[_Stored]) -> None:
    """Put the committed changes on the feed, observing the `committed` and `published` stages of new events."""
    receipts = {s.request.message_id: s.row["received_at"].timestamp() for s in stored if not s.request.replay}
    record_latency("committed", receipts.values())
    if feed is not None:
        feed.publish(entries, receipts)
        record_latency("published", [receipts[e] for entry in entries if (e := entry.data.get("event_id")) in receipts])


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


# After the commit a failure must not retry the batch: the daily read of sync settings and the periodic incident
# check catch up.


def _tell_companies_created(companies_created: Callable[[list[str]], None], events: list[Event]) -> None:
    created = sorted({e.company_id for e in events if e.event_type == "company.created" and e.company_id})
    if not created:
        return
    try:
        companies_created(created)
    except Exception as exc:
        log.warning("msg=sync_settings_not_queued companies=%s error=%s", ",".join(created), type(exc).__name__)


def _check_incidents(
    engine: Engine,
    feed: ChangeFeed | None,
    incidents: IncidentSettings,
    freshness: FreshnessPolicy,
    now: datetime,
    changes: list[Change],
    slices: dict[str, ConnectionSlice],
) -> None:
    finished = ("sync.completed", "sync.failed")
    keys = {slices[c.connection_id].connection.platform_key for c in changes if c.kind in finished}
    platforms = {key for key in keys if key}
    if not platforms:
        return
    try:
        check_after_fold(engine, feed, incidents, freshness, now, platforms)
    except Exception:
        log.exception("msg=incident_check_failed platforms=%s", ",".join(sorted(platforms)))


def _outcomes(plans: list[Outcome | _Stored], entries: list[FeedEntry], started: datetime) -> list[Outcome]:
    """Each request's outcome with the entries its event announced; logged and counted."""
    per_event: dict[str, list[FeedEntry]] = {}
    for entry in entries:
        per_event.setdefault(entry.data.get("event_id", ""), []).append(entry)
    outcomes: list[Outcome] = []
    handled: list[tuple[Event | str | None, str, bool]] = []
    for plan in plans:
        if isinstance(plan, Outcome):
            outcomes.append(plan)
            continue
        mine = per_event.get(plan.request.message_id, [])
        _log(plan, len(mine))
        handled.append((plan.event or plan.row.get("event_type"), plan.outcome.value, plan.request.replay))
        outcomes.append(Outcome(plan.outcome, tuple(mine)))
    record_folds(handled, started)
    return outcomes


def _log(stored: _Stored, changes: int) -> None:
    event = stored.event
    if event is None:
        log.warning(
            "event=%s company=%s connection=%s outcome=failed error=%r",
            stored.request.message_id,
            stored.row.get("company_id") or "-",
            stored.row.get("connection_id") or "-",
            stored.row["error"],
        )
        return
    log.info(
        "event=%s type=%r company=%s connection=%s outcome=%s changes=%d replay=%s",
        event.id,
        event.event_type,
        event.company_id,
        ",".join(event.connection_ids) or "-",
        stored.outcome.value,
        changes,
        stored.request.replay,
    )
