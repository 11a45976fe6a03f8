"""Replay a time range of the change stream to one subscription, with the body and `webhook-id` a live delivery
had or would have had (also for changes from before it existed or while it was disabled). It reaches what the
stream still holds, and says when the range starts before that; changes already delivered are skipped unless asked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from sqlalchemy import Engine
from sqlmodel import Session, col, select, update

from schemas.subscriptions import ReplayOut
from workers.ledger.changes import stream_key
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.dispatch import FeedChange, as_text, delivery_row, matches, record_deliveries
from workers.runtime.delivery_queue import enqueue_deliveries

CHUNK = 500


def _stream_id(at: datetime, last: bool) -> str:
    return f"{int(at.timestamp() * 1000)}-{'18446744073709551615' if last else '0'}"


def replay(
    engine: Engine,
    redis: Redis,
    namespace: str,
    subscription: Subscription,
    since: datetime,
    until: datetime,
    include_delivered: bool = False,
) -> ReplayOut:
    """Queue a delivery of every change in [since, until] that matches `subscription`'s filter."""
    key = stream_key(namespace)
    oldest_at, trimmed = _stream_start(redis, key)
    matched = queued = already = 0
    start, end = _stream_id(since, False), _stream_id(until, True)
    while True:
        entries: Any = redis.xrange(key, start, end, count=CHUNK)
        if not entries:
            break
        now = datetime.now(UTC)
        changes = [FeedChange.from_entry(i, f) for i, f in entries]
        rows = [delivery_row(subscription, c, now) for c in changes if c is not None and matches(subscription, c)]
        matched += len(rows)
        fresh = set(record_deliveries(engine, rows))
        again, delivered = _reset_existing(engine, [r["id"] for r in rows if r["id"] not in fresh], include_delivered)
        already += delivered
        queued += enqueue_deliveries(redis, namespace, [*fresh, *again])
        if len(entries) < CHUNK:
            break
        start = "(" + as_text(entries[-1][0])
    return ReplayOut(
        matched=matched,
        queued=queued,
        already_delivered=already,
        oldest_available=oldest_at,
        truncated=trimmed and (oldest_at is None or oldest_at > since),
    )


def _stream_start(redis: Redis, key: str) -> tuple[datetime | None, bool]:
    """(time of the oldest change the stream holds, whether retention has removed any)."""
    try:
        info: Any = redis.xinfo_stream(key)
    except ResponseError:  # no stream yet: nothing was ever published
        return None, False
    first = info.get("first-entry")
    change = FeedChange.from_entry(*first) if first else None
    return (change.created_at if change else None), int(info.get("entries-added", 0)) > int(info.get("length", 0))


def _reset_existing(engine: Engine, ids: list[str], include_delivered: bool) -> tuple[list[str], int]:
    """Make existing deliveries due now with a fresh retry window; returns (ids to queue, delivered count)."""
    if not ids:
        return [], 0
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        statuses = dict(session.exec(select(Delivery.id, Delivery.status).where(col(Delivery.id).in_(ids))).all())
        delivered = [i for i, s in statuses.items() if s == "delivered"]
        again = [i for i, s in statuses.items() if s != "delivered" or include_delivered]
        if again:
            session.exec(
                update(Delivery)
                .where(col(Delivery.id).in_(again))
                .values(status="pending", next_attempt_at=now, window_started_at=now)
            )
    return again, len(delivered)
