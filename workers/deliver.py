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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from redis import Redis
from sqlalchemy import Engine, or_
from sqlmodel import Session, col, update

from schemas.settings import Settings
from schemas.subscriptions import SUBSCRIPTION_DISABLED
from workers.changes import ChangeFeed, FeedEntry
from workers.delivery_queue import enqueue_deliveries
from workers.ledger import Delivery, Subscription
from workers.metrics import record_delivery, record_subscription_disabled
from workers.outbound_url import UnsafeUrl, check_url
from workers.signing import webhook_headers
from workers.subscription_views import signing_keys, subscription_out

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
        self.http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

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
        delivery, subscription = claimed
        if not subscription.enabled:
            self._give_up(delivery_id, "subscription disabled")
            return Attempt(delivery_id, "failed", error="subscription disabled")
        sent_at = datetime.now(UTC)
        headers = webhook_headers(delivery.id, sent_at, delivery.body, signing_keys(subscription, sent_at))
        code, error = self._post(subscription.url, delivery.body, headers)
        attempt, disabled = self._record(delivery_id, subscription.id, code, error, datetime.now(UTC))
        log.info(
            "delivery=%s subscription=%s type=%s outcome=%s code=%s error=%r retry_in=%s",
            delivery_id,
            subscription.id,
            delivery.event_type,
            attempt.outcome,
            code,
            error,
            f"{attempt.retry_in:.1f}" if attempt.retry_in is not None else "-",
        )
        if disabled is not None:
            self.announce_disabled(disabled)
        return attempt

    def _claim(self, delivery_id: str, now: datetime) -> tuple[Delivery, Subscription] | None:
        lease = now + timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        due = now + timedelta(seconds=EARLY_TOLERANCE_SECONDS)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            claimed = session.exec(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id, col(Delivery.status) == "pending")
                .where(or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= due))
                .values(next_attempt_at=lease)
            )
            if claimed.rowcount == 0:
                return None
            delivery = session.get(Delivery, delivery_id)
            subscription = session.get(Subscription, delivery.subscription_id) if delivery else None
            if delivery is None or subscription is None:
                return None
            return delivery, subscription

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
        self, delivery_id: str, subscription_id: str, code: int | None, error: str | None, now: datetime
    ) -> tuple[Attempt, Subscription | None]:
        """Store the attempt's result; returns it and the subscription if this attempt disabled it."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:  # the subscription was deleted meanwhile
                return Attempt(delivery_id, "failed", code, "subscription deleted"), None
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_response_code = code
            delivery.last_error = error if error else (None if code and 200 <= code < 300 else f"HTTP {code}")
            if code is not None and 200 <= code < 300:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = "delivered", now, None
                session.exec(
                    update(Subscription)
                    .where(col(Subscription.id) == subscription_id, col(Subscription.failing_since).is_not(None))
                    .values(failing_since=None)
                )
                return Attempt(delivery_id, "delivered", code), None
            if code == 410:
                delivery.status, delivery.next_attempt_at = "failed", None
                return Attempt(delivery_id, "gone", code, delivery.last_error), _disable(
                    session, subscription_id, "gone", now
                )
            session.exec(
                update(Subscription)
                .where(col(Subscription.id) == subscription_id, col(Subscription.failing_since).is_(None))
                .values(failing_since=now)
            )
            subscription = session.get(Subscription, subscription_id)
            failing_since = subscription.failing_since if subscription else None
            limit = timedelta(seconds=self.settings.subscriptions_disable_after_seconds)
            if failing_since is not None and now - failing_since >= limit:
                delivery.status, delivery.next_attempt_at = "failed", None
                return Attempt(delivery_id, "disabled", code, delivery.last_error), _disable(
                    session, subscription_id, "failing", now
                )
            delay = self.policy.delay(delivery.attempts)
            if (
                now + timedelta(seconds=delay) - delivery.window_started_at
            ).total_seconds() > self.policy.window_seconds:
                delivery.status, delivery.next_attempt_at = "failed", None
                return Attempt(delivery_id, "failed", code, delivery.last_error), None
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            return Attempt(delivery_id, "retry", code, delivery.last_error, delay), None

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


def _disable(session: Session, subscription_id: str, reason: str, now: datetime) -> Subscription | None:
    """Disable the subscription if it is still enabled; return it only if this call disabled it."""
    changed = session.exec(
        update(Subscription)
        .where(col(Subscription.id) == subscription_id, col(Subscription.enabled))
        .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    )
    if changed.rowcount == 0:
        return None
    subscription = session.get(Subscription, subscription_id)
    if subscription is not None:
        session.refresh(subscription)
    return subscription


def _count(record: Callable[[str], None], label: str) -> None:
    """Metrics never decide whether a delivery is made or retried."""
    try:
        record(label)
    except Exception as exc:
        log.warning("msg=metrics_unavailable error=%s", type(exc).__name__)
