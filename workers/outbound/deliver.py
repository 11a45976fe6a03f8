"""One attempt at one delivery: claim it, sign it, POST it, record what happened, plan the next one.

This is what the `deliver_webhook` actor runs (and `POST /v1/subscriptions/{id}/test` inline).
Contract:

* at least once, and a duplicate queue message is harmless: an attempt first *claims* the delivery by
  moving `next_attempt_at` past its own time limit, so a second message finds nothing due;
* a 2xx within the timeout is success; `410 Gone` disables the subscription; anything else (3xx
  included, timeouts, refused connections) is retried with exponential backoff and jitter until the
  retry window is spent;
* a subscription whose attempts have all failed for `subscriptions_disable_after_seconds` is disabled,
  and `subscription.disabled` is published on the change stream (once, by whoever disabled it).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from redis import Redis
from sqlalchemy import Connection, Engine, or_
from sqlmodel import Session, col, select, update

from schemas.settings import Settings
from schemas.subscriptions import SUBSCRIPTION_DISABLED
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.objects import signing_keys, subscription_out
from workers.outbound.signing import webhook_headers
from workers.outbound.url_policy import UnsafeUrl, check_url
from workers.runtime.delivery_queue import enqueue_deliveries
from workers.runtime.metrics import record_delivery, record_subscription_disabled

log = logging.getLogger("synctrack.deliveries")

LEASE_MARGIN_SECONDS = 30.0
"""An attempt holds its delivery for the HTTP timeout plus this; past that, it is due again."""
EARLY_TOLERANCE_SECONDS = 1.0
"""A delayed message may run this much before `next_attempt_at` (clocks of different hosts)."""
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    min_seconds: float
    max_seconds: float
    window_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.subscriptions_retry_min_seconds,
            settings.subscriptions_retry_max_seconds,
            settings.subscriptions_retry_window_seconds,
        )

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds before attempt `attempts + 1`: min·2^(attempts-1), capped, with ±25 % jitter."""
        base = min(self.max_seconds, self.min_seconds * 2.0 ** max(0, attempts - 1))
        return base * float((rng or random).uniform(0.75, 1.25))


@dataclass(frozen=True)
class Claimed:
    """A delivery this attempt has claimed, with its subscription as it was at the claim."""

    delivery_id: str
    subscription: Subscription
    event_type: str
    body: str
    attempts: int
    window_started_at: datetime


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    outcome: str
    """`delivered`, `retry`, `failed` (gave up), `gone`, `disabled`, or `skipped` (nothing due)."""
    response_code: int | None = None
    error: str | None = None
    retry_in: float | None = None


class Deliverer:
    """Makes attempts; one per process, shared by the actor's threads (httpx.Client is thread-safe)."""

    def __init__(self, settings: Settings, engine: Engine, redis: Redis) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.policy = RetryPolicy.from_settings(settings)
        self.feed = ChangeFeed(
            redis,
            settings.redis_namespace,
            settings.stream_max_changes,
            retention_seconds=settings.stream_retention_hours * 3600,
        )
        self.timeout = settings.subscriptions_timeout_seconds
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None
        self.http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite has one writer: this process's threads queue here rather than in SQLite's busy loop."""
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            yield

    def close(self) -> None:
        self.http.close()

    def run(self, delivery_id: str) -> Attempt:
        """Make the attempt that is due for `delivery_id`, and queue the next one if it failed."""
        attempt = self.attempt(delivery_id)
        if attempt.retry_in is not None:
            enqueue_deliveries(self.redis, self.settings.redis_namespace, [delivery_id], int(attempt.retry_in * 1000))
        _count(record_delivery, attempt.outcome)
        return attempt

    def attempt(self, delivery_id: str) -> Attempt:
        claimed = self._claim(delivery_id, datetime.now(UTC))
        if claimed is None:
            return Attempt(delivery_id, "skipped")
        subscription = claimed.subscription
        if not subscription.enabled:
            self._give_up(delivery_id, "subscription disabled")
            return Attempt(delivery_id, "failed", error="subscription disabled")
        sent_at = datetime.now(UTC)
        headers = webhook_headers(delivery_id, sent_at, claimed.body, signing_keys(subscription, sent_at))
        code, error = self._post(subscription.url, claimed.body, headers)
        attempt, disabled = self._record(claimed, code, error, datetime.now(UTC))
        log.info(
            "delivery=%s subscription=%s type=%s outcome=%s code=%s error=%r retry_in=%s",
            delivery_id,
            subscription.id,
            claimed.event_type,
            attempt.outcome,
            code,
            error,
            f"{attempt.retry_in:.1f}" if attempt.retry_in is not None else "-",
        )
        if disabled is not None:
            self.announce_disabled(disabled)
        return attempt

    def _claim(self, delivery_id: str, now: datetime) -> Claimed | None:
        """Take the delivery if it is due: its `next_attempt_at` moves past this attempt's time limit."""
        lease = now + timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        due = now + timedelta(seconds=EARLY_TOLERANCE_SECONDS)
        claim = (
            update(Delivery)
            .where(col(Delivery.id) == delivery_id, col(Delivery.status) == "pending")
            .where(or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= due))
            .values(next_attempt_at=lease)
            .returning(
                col(Delivery.subscription_id),
                col(Delivery.event_type),
                col(Delivery.body),
                col(Delivery.attempts),
                col(Delivery.window_started_at),
            )
        )
        with self._writing(), self.engine.begin() as conn:
            row = conn.execute(claim).first()
            if row is None:
                return None
            subscription = _load_subscription(conn, row.subscription_id)
        if subscription is None:
            return None
        return Claimed(delivery_id, subscription, row.event_type, row.body, row.attempts, row.window_started_at)

    def _post(self, url: str, body: str, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """POST once; (status code, None) if the receiver answered, (None, reason) if not."""
        try:
            check_url(
                url,
                allow_http=self.settings.subscriptions_allow_http,
                allow_private=self.settings.subscriptions_allow_private,
            )
        except UnsafeUrl as exc:
            return None, f"url refused: {exc}"
        deadline = time.monotonic() + self.timeout
        try:
            with self.http.stream("POST", url, content=body.encode(), headers=headers) as response:
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES or time.monotonic() > deadline:
                        break  # the status is what counts; do not let a receiver hold the thread
                return response.status_code, None
        except httpx.TimeoutException:
            return None, f"timeout after {self.timeout:g}s"
        except httpx.ConnectError as exc:
            return None, f"connection failed: {exc}"[:300]
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]

    def _record(
        self, claimed: Claimed, code: int | None, error: str | None, now: datetime
    ) -> tuple[Attempt, Subscription | None]:
        """Store the attempt's result; returns it and the subscription if this attempt disabled it."""
        delivery_id, subscription_id = claimed.delivery_id, claimed.subscription.id
        attempts = claimed.attempts + 1
        done = {"attempts": col(Delivery.attempts) + 1, "last_attempt_at": now, "last_response_code": code}
        if code is not None and 200 <= code < 300:
            with self._writing(), self.engine.begin() as conn:
                _update_delivery(
                    conn,
                    delivery_id,
                    **done,
                    last_error=None,
                    status="delivered",
                    delivered_at=now,
                    next_attempt_at=None,
                )
                conn.execute(
                    update(Subscription)
                    .where(col(Subscription.id) == subscription_id, col(Subscription.failing_since).is_not(None))
                    .values(failing_since=None)
                )
            return Attempt(delivery_id, "delivered", code), None
        error = error or f"HTTP {code}"
        failed = {**done, "last_error": error, "status": "failed", "next_attempt_at": None}
        with self._writing(), self.engine.begin() as conn:
            if code == 410:
                _update_delivery(conn, delivery_id, **failed)
                return Attempt(delivery_id, "gone", code, error), _disable(conn, subscription_id, "gone", now)
            conn.execute(
                update(Subscription)
                .where(col(Subscription.id) == subscription_id, col(Subscription.failing_since).is_(None))
                .values(failing_since=now)
            )
            failing_since = conn.execute(
                select(Subscription.failing_since).where(col(Subscription.id) == subscription_id)
            ).scalar()
            limit = timedelta(seconds=self.settings.subscriptions_disable_after_seconds)
            if failing_since is not None and now - failing_since >= limit:
                _update_delivery(conn, delivery_id, **failed)
                return Attempt(delivery_id, "disabled", code, error), _disable(conn, subscription_id, "failing", now)
            delay = self.policy.delay(attempts)
            next_at = now + timedelta(seconds=delay)
            if (next_at - claimed.window_started_at).total_seconds() > self.policy.window_seconds:
                _update_delivery(conn, delivery_id, **failed)
                return Attempt(delivery_id, "failed", code, error), None
            _update_delivery(conn, delivery_id, **done, last_error=error, next_attempt_at=next_at)
            return Attempt(delivery_id, "retry", code, error, delay), None

    def _give_up(self, delivery_id: str, reason: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.exec(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id)
                .values(status="failed", next_attempt_at=None, last_error=reason)
            )

    def announce_disabled(self, subscription: Subscription) -> None:
        """Publish `subscription.disabled` on the change stream (dashboards, other subscriptions)."""
        data = subscription_out(subscription, datetime.now(UTC)).model_dump(mode="json")
        self.feed.publish([FeedEntry(SUBSCRIPTION_DISABLED, "", "", data)])
        _count(record_subscription_disabled, subscription.disabled_reason or "")
        log.warning(
            "event=%s subscription=%s reason=%s", SUBSCRIPTION_DISABLED, subscription.id, subscription.disabled_reason
        )


def _load_subscription(conn: Connection, subscription_id: str) -> Subscription | None:
    row = conn.execute(select(Subscription).where(col(Subscription.id) == subscription_id)).first()
    return Subscription(**row._mapping) if row is not None else None


def _update_delivery(conn: Connection, delivery_id: str, **values: Any) -> None:
    conn.execute(update(Delivery).where(col(Delivery.id) == delivery_id).values(**values))


def _disable(conn: Connection, subscription_id: str, reason: str, now: datetime) -> Subscription | None:
    """Disable the subscription if it is still enabled; return it only if this call disabled it."""
    changed = conn.execute(
        update(Subscription)
        .where(col(Subscription.id) == subscription_id, col(Subscription.enabled))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    )
    return _load_subscription(conn, subscription_id) if changed.rowcount else None


def _count(record: Callable[[str], None], label: str) -> None:
    """Metrics never decide whether a delivery is made or retried."""
    try:
        record(label)
    except Exception as exc:
        log.warning("msg=metrics_unavailable error=%s", type(exc).__name__)
