"""Attempts at deliveries: claim a batch, sign and POST each, record what happened, queue the retries.

At least once, and a repeated queue message is harmless: an attempt first claims its delivery by moving
`next_attempt_at` past its own time limit, and the `webhook-id` is the delivery id on every attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from redis import Redis
from sqlalchemy import Engine, or_
from sqlmodel import col, update

from schemas.settings import Settings
from schemas.subscriptions import SUBSCRIPTION_DISABLED
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.record import Attempt, Claimed, Recorder, Result, RetryPolicy, SubscriptionRows
from workers.outbound.signing import webhook_headers
from workers.outbound.transport import BadAnswer, ConnectFailed, Destinations, TimedOut
from workers.outbound.url_policy import UnsafeUrl
from workers.outbound.views import signing_keys, subscription_out
from workers.runtime.delivery_queue import enqueue_delayed
from workers.runtime.metrics import record_delivery, record_subscription_disabled

log = logging.getLogger("synctrack.deliveries")

LEASE_MARGIN_SECONDS = 30.0
"""A batch holds its deliveries for `BATCH_SECONDS` plus the HTTP timeout plus this; then they are due again."""
EARLY_TOLERANCE_SECONDS = 1.0
"""A delayed message may run this much before `next_attempt_at` (clocks of different hosts)."""
MAX_RESPONSE_BYTES = 64 * 1024
BATCH_SECONDS = 20.0
"""No POST of a batch starts later than this after its claim; the rest are released."""
SUBSCRIPTION_INACTIVE = "subscription disabled"
CLAIM_SQL = (
    "WITH held AS MATERIALIZED (SELECT id, status, next_attempt_at FROM deliveries"
    " WHERE id = ANY(%(ids)s::varchar[]) ORDER BY id FOR UPDATE SKIP LOCKED)"
    " UPDATE deliveries AS d SET next_attempt_at = %(lease)s::timestamptz FROM held WHERE d.id = held.id"
    " AND held.status = 'pending' AND (held.next_attempt_at IS NULL OR held.next_attempt_at <= %(due)s::timestamptz)"
    " RETURNING d.id, d.subscription_id, d.event_type, d.body, d.attempts, d.window_started_at"
)
"""The claim on PostgreSQL, the ids as one array. Rows are found by primary key alone, then tested for being due:
with the test in the same scan the planner may also read the `(status, next_attempt_at)` index, one entry per due
delivery, which under a backlog costs far more than the claim. Locking rows that are not due is harmless."""
CLAIMED = ("id", "subscription_id", "event_type", "body", "attempts", "window_started_at")


class Deliverer:
    """Makes attempts; one per process, shared by the actor's threads (so are its destinations' pools)."""

    def __init__(self, settings: Settings, engine: Engine, redis: Redis) -> None:
        self.settings, self.engine, self.redis = settings, engine, redis
        self.policy = RetryPolicy.from_settings(settings)
        retention_seconds = settings.stream_retention_hours * 3600
        self.feed = ChangeFeed(redis, settings.redis_namespace, settings.stream_max_changes, retention_seconds)
        self.timeout = settings.subscriptions_timeout_seconds
        # SQLite has one writer: this process's threads queue here rather than in SQLite's busy loop.
        self._writing: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        self.subscriptions = SubscriptionRows()
        self.destinations = Destinations(
            allow_http=settings.subscriptions_allow_http, allow_private=settings.subscriptions_allow_private
        )

    def close(self) -> None:
        """Close every destination's connections (the process is shutting down)."""
        self.destinations.close()

    def run(self, delivery_id: str) -> Attempt:
        """Make the attempt that is due for `delivery_id`, and queue the next one if it failed."""
        return self.run_batch([delivery_id])[0]

    def run_batch(self, delivery_ids: Sequence[str]) -> list[Attempt]:
        """Make the attempts due for `delivery_ids` (one per id, in that order), record them in one transaction,
        queue the retries and the released ones. A destination that did not answer gets no second POST from this
        batch, and no POST starts after `BATCH_SECONDS`: the rest is released (due again at once, no attempt
        counted), so one slow receiver holds one thread for about one timeout."""
        started = time.monotonic()
        claimed = self._claim(delivery_ids, datetime.now(UTC))
        results: list[Result] = []
        inactive: list[str] = []
        released: list[str] = []
        unreachable: set[str] = set()
        subscription: Subscription | None = None
        for item in claimed.values():  # grouped by subscription (`_claim`)
            if item.subscription is not subscription:  # its columns read once per subscription, not per delivery
                subscription = item.subscription
                subscription_id, url, enabled = subscription.id, subscription.url, subscription.enabled
            if not enabled:
                inactive.append(item.delivery_id)
                continue
            if subscription_id in unreachable or time.monotonic() - started > BATCH_SECONDS:
                released.append(item.delivery_id)
                continue
            sent_at = datetime.now(UTC)
            headers = webhook_headers(item.delivery_id, sent_at, item.body, signing_keys(subscription, sent_at))
            code, error = self._post(url, item.body, headers)
            if code is None:
                unreachable.add(subscription_id)
            results.append(Result(item, code, error, datetime.now(UTC)))
        now = datetime.now(UTC)
        with self._writing, self.engine.begin() as conn:
            recorder = Recorder(conn, self.policy, self.settings.subscriptions_disable_after_seconds)
            recorded = recorder.record(results)
            recorder.give_up(inactive, SUBSCRIPTION_INACTIVE)
            recorder.release(released, now)
        outcomes = {attempt.delivery_id: attempt for attempt in recorded}
        outcomes |= {i: Attempt(i, "failed", error=SUBSCRIPTION_INACTIVE) for i in inactive}
        outcomes |= {i: Attempt(i, "released") for i in released}
        for result in results:
            attempt = outcomes[result.claimed.delivery_id]
            log.info(
                "delivery=%s subscription=%s type=%s outcome=%s code=%s error=%r retry_in=%s",
                attempt.delivery_id,
                result.claimed.subscription.id,
                result.claimed.event_type,
                attempt.outcome,
                result.code,
                result.error,
                f"{attempt.retry_in:.1f}" if attempt.retry_in is not None else "-",
            )
        for subscription in recorder.disabled:
            self.announce_disabled(subscription)
        attempts = [outcomes.get(i) or Attempt(i, "skipped") for i in delivery_ids]
        retries = [([a.delivery_id], int(a.retry_in * 1000)) for a in attempts if a.retry_in is not None]
        if retries or released:
            enqueue_delayed(self.redis, self.settings.redis_namespace, [*retries, (released, None)])
        for outcome, count in Counter(a.outcome for a in attempts).items():
            _count(record_delivery, outcome, count)
        return attempts

    def _claim(self, delivery_ids: Sequence[str], now: datetime) -> dict[str, Claimed]:
        """Take the deliveries that are due (`next_attempt_at` moves past this batch's time limit), grouped by
        subscription. Rows another attempt is claiming right now are skipped, not waited for (SKIP LOCKED)."""
        lease = now + timedelta(seconds=BATCH_SECONDS + self.timeout + LEASE_MARGIN_SECONDS)
        due = now + timedelta(seconds=EARLY_TOLERANCE_SECONDS)
        with self._writing, self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                rows = conn.exec_driver_sql(CLAIM_SQL, {"ids": list(delivery_ids), "due": due, "lease": lease}).all()
            else:  # SQLite has one writer: nothing to lock or skip
                claim = (
                    update(Delivery)
                    .where(col(Delivery.id).in_(list(delivery_ids)), col(Delivery.status) == "pending")
                    .where(or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= due))
                    .values(next_attempt_at=lease)
                    .returning(*(Delivery.__table__.c[name] for name in CLAIMED))  # type: ignore[attr-defined]
                )
                rows = conn.execute(claim).all()
            if not rows:
                return {}
            subscriptions = self.subscriptions.load(conn, sorted({row.subscription_id for row in rows}))
        claimed = {}
        for ident, subscription_id, event_type, body, attempts, window_started_at in sorted(rows, key=itemgetter(1)):
            subscription = subscriptions.get(subscription_id)
            if subscription is not None:
                claimed[ident] = Claimed(ident, subscription, event_type, body, attempts, window_started_at)
        return claimed

    def _post(self, url: str, body: str, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """POST once; (status code, None) if the receiver answered, (None, reason) if not."""
        try:
            return self.destinations.post(url, headers.items(), body.encode(), self.timeout, MAX_RESPONSE_BYTES), None
        except UnsafeUrl as exc:
            return None, f"url refused: {exc}"
        except (ConnectFailed, TimedOut, BadAnswer) as exc:
            return None, str(exc)

    def announce_disabled(self, subscription: Subscription) -> None:
        """Publish `subscription.disabled` on the change stream (dashboards, other subscriptions)."""
        data = subscription_out(subscription, datetime.now(UTC)).model_dump(mode="json")
        self.feed.publish([FeedEntry(SUBSCRIPTION_DISABLED, "", "", data)])
        _count(record_subscription_disabled, subscription.disabled_reason or "")
        log.warning(
            "event=%s subscription=%s reason=%s", SUBSCRIPTION_DISABLED, subscription.id, subscription.disabled_reason
        )


def _count(record: Callable[..., None], *args: Any) -> None:
    """Metrics never decide whether a delivery is made or retried."""
    try:
        record(*args)
    except Exception as exc:
        log.warning("msg=metrics_unavailable error=%s", type(exc).__name__)
