"""The dispatcher: change stream → delivery rows → delivery messages, one thread per worker process.

All read `{ns}:changes` through one consumer group, and an entry is acknowledged once its deliveries are stored and
queued (a dead process's entries are claimed after `CLAIM_IDLE_MS`). A delivery's id is derived from subscription
and change, so a change dispatched twice is sent once. A subscription receives the changes published after it was
created; earlier ones can be replayed (`workers.outbound.range_replay`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from sqlalchemy import Engine, Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from schemas.api import format_time
from schemas.json_codec import dumps, loads
from schemas.settings import Settings
from workers.ledger.bulk_sql import pg_arrays
from workers.ledger.changes import stream_key
from workers.ledger.tables import Delivery, Subscription
from workers.runtime.delivery_queue import enqueue_deliveries

log = logging.getLogger("synctrack.dispatch")

GROUP = "subscriptions"
BATCH = 200
BLOCK_MS = 2_000
CLAIM_IDLE_MS = 60_000
CLAIM_EVERY_SECONDS = 30.0
EMPTY_POLL_SECONDS = 0.05
DELIVERIES: Table = Delivery.__table__  # type: ignore[attr-defined]
CHANGE_COLUMNS = (
    "event_id",
    "event_type",
    "company_id",
    "body",
    "status",
    "attempts",
    "next_attempt_at",
    "window_started_at",
    "created_at",
)
"""The columns a change's deliveries share: sent once per change, not once per subscription."""
INSERT_SQL = (
    f"INSERT INTO deliveries (id, subscription_id, {', '.join(CHANGE_COLUMNS)})"
    f" SELECT d.id, d.subscription_id, {', '.join(f'c.{name}' for name in CHANGE_COLUMNS)}"
    f" FROM unnest({pg_arrays(DELIVERIES, ('id', 'subscription_id'))}, %b::int8[]) AS d(id, subscription_id, n)"
    f" JOIN unnest({pg_arrays(DELIVERIES, CHANGE_COLUMNS)})"
    f" WITH ORDINALITY AS c({', '.join(CHANGE_COLUMNS)}, n) ON c.n = d.n"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
"""`record_deliveries` on PostgreSQL in one statement: each delivery's id, subscription and change number, joined
to its change's columns (sent once per change); the rows that existed already are the ones not returned."""


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One entry of the change stream, as a subscription sees it; `id` is the stream entry id (`<ms>-<seq>`)."""

    id: str
    event_type: str
    company_id: str | None
    data: dict[str, Any]

    @classmethod
    def from_entry(cls, entry_id: Any, fields: dict[Any, Any] | None) -> FeedChange | None:
        """None for an entry that is not a change (malformed, or trimmed while pending)."""
        if not fields:
            return None
        text = {as_text(k): as_text(v) for k, v in fields.items()}
        try:
            data = loads(text.get("data") or "{}")
        except ValueError:
            return None
        if "event" not in text or not isinstance(data, dict):
            return None
        return cls(as_text(entry_id), text["event"], text.get("company_id") or None, data)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-")[0]) / 1000, UTC)


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def matches(subscription: Subscription, change: FeedChange) -> bool:
    if "*" not in subscription.event_types and change.event_type not in subscription.event_types:
        return False
    return subscription.company_ids is None or change.company_id in subscription.company_ids


def delivery_id(subscription_id: str, event_id: str) -> str:
    """The `webhook-id` of (subscription, event): the same however often the pair is recorded."""
    return "msg_" + hashlib.sha256(f"{subscription_id}\n{event_id}".encode()).hexdigest()[:32]


def event_body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> str:
    body = {"id": event_id, "type": event_type, "created_at": format_time(created_at), "data": data}
    return dumps(body)


def change_body(change: FeedChange) -> str:
    """The body every subscription receives for `change`."""
    return event_body(change.id, change.event_type, change.created_at, change.data)


def delivery_row(
    subscription: Subscription, change: FeedChange, now: datetime, body: str | None = None
) -> dict[str, Any]:
    """The delivery of `change` to `subscription`; `body` is `change_body(change)` if the caller has it."""
    return {
        "id": delivery_id(subscription.id, change.id),
        "subscription_id": subscription.id,
        "event_id": change.id,
        "event_type": change.event_type,
        "company_id": change.company_id,
        "body": body if body is not None else change_body(change),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "window_started_at": now,
        "created_at": now,
    }


def record_deliveries(engine: Engine, rows: list[dict[str, Any]]) -> list[str]:
    """Insert the delivery rows that do not exist yet; return the ids that still need a first attempt (also of
    rows that existed but were never attempted: their queue message may have been lost with its process)."""
    if not rows:
        return []
    ids = list(dict.fromkeys(row["id"] for row in rows))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            inserted = {row[0] for row in conn.exec_driver_sql(INSERT_SQL, _insert_arrays(rows))}
        else:
            insert = sqlite_insert(DELIVERIES).on_conflict_do_nothing().returning(DELIVERIES.c.id)
            inserted = {row[0] for row in conn.execute(insert, rows)}
        stored = [i for i in ids if i not in inserted]
        existing = select(Delivery.id, Delivery.status, Delivery.attempts).where(col(Delivery.id).in_(stored))
        found = conn.execute(existing).all() if stored else []
    unattempted = [i for i, status, attempts in found if status == "pending" and attempts == 0]
    return [i for i in ids if i in inserted] + unattempted


def _insert_arrays(rows: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    """`INSERT_SQL`'s parameters: the deliveries' own columns, and each distinct change's columns once."""
    changes: dict[tuple[Any, ...], int] = {}
    positions = [changes.setdefault(tuple(row[c] for c in CHANGE_COLUMNS), len(changes) + 1) for row in rows]
    columns = [list(values) for values in zip(*changes, strict=True)]
    return ([row["id"] for row in rows], [row["subscription_id"] for row in rows], positions, *columns)


class Dispatcher(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        redis: Redis,
        consumer: str | None = None,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        super().__init__(name="synctrack-dispatcher", daemon=True)
        self.settings, self.engine, self.redis = settings, engine, redis
        self.key = stream_key(settings.redis_namespace)
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.claim_idle_ms = claim_idle_ms
        self._stop_event = threading.Event()
        self._last_claim = 0.0

    def ensure_group(self) -> None:
        """Create the consumer group at the stream's end; before this, no change is dispatched."""
        try:
            self.redis.xgroup_create(self.key, GROUP, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.step()
            except Exception:
                log.exception("msg=dispatch_failed")
                self._stop_event.wait(1.0)

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """Dispatch one batch (abandoned entries first, then new ones); returns entries handled."""
        if time.monotonic() - self._last_claim > CLAIM_EVERY_SECONDS:
            self._last_claim = time.monotonic()
            handled = self.claim_abandoned()
            if handled:
                return handled
        started = time.monotonic()
        answer: Any = self.redis.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count=BATCH, block=block_ms)
        if not answer:
            if time.monotonic() - started < block_ms / 2000:
                # The in-process Redis of `synctrack dev` does not block: poll instead of spinning.
                self._stop_event.wait(EMPTY_POLL_SECONDS)
            return 0
        _key, entries = answer[0]
        return self.handle(entries)

    def claim_abandoned(self) -> int:
        handled = 0
        start = "0-0"
        while True:
            answer: Any = self.redis.xautoclaim(self.key, GROUP, self.consumer, self.claim_idle_ms, start, count=BATCH)
            start, entries = answer[0], answer[1]
            deleted = answer[2] if len(answer) > 2 else []
            if deleted:  # trimmed from the stream while pending: nothing left to send
                self.redis.xack(self.key, GROUP, *deleted)
            handled += self.handle([(i, f) for i, f in entries if f])
            if start in (b"0-0", "0-0"):
                return handled

    def handle(self, entries: list[tuple[Any, Any]]) -> int:
        if not entries:
            return 0
        # Without enabled subscriptions (the common case without outbound webhooks) entries are only acknowledged.
        with Session(self.engine, expire_on_commit=False) as session:
            subscriptions = list(session.exec(select(Subscription).where(col(Subscription.enabled))))
        changes = [FeedChange.from_entry(i, f) for i, f in entries] if subscriptions else []
        now, rows = datetime.now(UTC), []
        for change in filter(None, changes):
            # The body is the same for every subscription: encoded once per change, not once per delivery.
            created_at, body = change.created_at, None
            for subscription in subscriptions:
                if created_at >= subscription.created_at and matches(subscription, change):
                    body = body or change_body(change)
                    rows.append(delivery_row(subscription, change, now, body))
        ids = record_deliveries(self.engine, rows)
        if ids:
            enqueue_deliveries(self.redis, self.settings.redis_namespace, ids)
            log.info("msg=dispatched changes=%d deliveries=%d", len(entries), len(ids))
        self.redis.xack(self.key, GROUP, *[i for i, _ in entries])
        return len(entries)


def start_dispatcher(settings: Settings, engine: Engine, redis: Redis) -> Dispatcher | None:
    """Create the consumer group now (so no change published after start is missed), then start."""
    if not settings.subscriptions_dispatcher:
        return None
    dispatcher = Dispatcher(settings, engine, redis)
    dispatcher.ensure_group()
    dispatcher.start()
    return dispatcher
