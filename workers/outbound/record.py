"""What a batch of attempts leaves in the delivery log, in the caller's transaction, result by result: a 2xx is
delivered and ends the subscription's failing streak; `410 Gone` disables the subscription; anything else starts
or continues the streak, disables a subscription failing for `subscriptions_disable_after_seconds`, and otherwise
plans a retry with backoff until the retry window is spent.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func
from sqlmodel import col, select, update

from schemas.settings import Settings
from workers.ledger.tables import Delivery, Subscription


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
    delivery_id: str
    subscription: Subscription
    event_type: str
    body: str
    attempts: int
    window_started_at: datetime


@dataclass(frozen=True)
class Result:
    """What one POST gave: the status code if the receiver answered, else why not; when it ended."""

    claimed: Claimed
    code: int | None
    error: str | None
    at: datetime


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    outcome: str
    """`delivered`, `retry`, `failed` (gave up), `gone`, `disabled`, `skipped` (nothing due) or `released`
    (claimed but not attempted in this batch: queued again at once, no attempt counted)."""
    response_code: int | None = None
    error: str | None = None
    retry_in: float | None = None


DELIVERED = (
    update(Delivery)
    .where(col(Delivery.id) == bindparam("delivery_id"))
    .values(
        attempts=col(Delivery.attempts) + 1,
        last_attempt_at=bindparam("at"),
        last_response_code=bindparam("code"),
        last_error=None,
        status="delivered",
        delivered_at=bindparam("at"),
        next_attempt_at=None,
    )
)


DELIVERED_SQL = (
    "UPDATE deliveries AS d SET attempts = d.attempts + 1, last_attempt_at = u.at, last_response_code = u.code,"
    " last_error = NULL, status = 'delivered', delivered_at = u.at, next_attempt_at = NULL"
    " FROM unnest(%s::varchar[], %s::timestamptz[], %s::integer[]) AS u(id, at, code) WHERE d.id = u.id"
)
"""`DELIVERED` for every row at once on PostgreSQL."""
RECOVERED_SQL = (
    "UPDATE subscriptions SET failing_since = NULL WHERE id IN (SELECT id FROM subscriptions"
    " WHERE id = ANY(%s::varchar[]) AND failing_since IS NOT NULL ORDER BY id FOR UPDATE)"
)
"""Ends the subscriptions' failing streaks, locking them in id order, as every batch does: no deadlock."""


class Recorder:
    """Applies results inside the caller's transaction; `disabled` lists the subscriptions it disabled."""

    def __init__(self, conn: Connection, policy: RetryPolicy, disable_after_seconds: float) -> None:
        self.conn = conn
        self.policy = policy
        self.disable_after = timedelta(seconds=disable_after_seconds)
        self.disabled: list[Subscription] = []
        self._delivered: list[Result] = []

    def record(self, results: Sequence[Result]) -> list[Attempt]:
        attempts = []
        for result in results:
            if result.code is not None and 200 <= result.code < 300:
                self._delivered.append(result)
                attempts.append(Attempt(result.claimed.delivery_id, "delivered", result.code))
            else:
                self._flush()
                attempts.append(self._failed(result))
        self._flush()
        return attempts

    def give_up(self, delivery_ids: Sequence[str], reason: str) -> None:
        """End deliveries without an attempt (their subscription is disabled)."""
        if delivery_ids:
            self._update(col(Delivery.id).in_(delivery_ids), status="failed", next_attempt_at=None, last_error=reason)

    def release(self, delivery_ids: Sequence[str], now: datetime) -> None:
        """Hand claimed deliveries back, due now, with no attempt counted."""
        if delivery_ids:
            self._update(col(Delivery.id).in_(delivery_ids), col(Delivery.status) == "pending", next_attempt_at=now)

    def _flush(self) -> None:
        done, self._delivered = self._delivered, []
        if not done:
            return
        recovered = sorted({r.claimed.subscription.id for r in done})
        if self.conn.dialect.name == "postgresql":
            columns = ([r.claimed.delivery_id for r in done], [r.at for r in done], [r.code for r in done])
            self.conn.exec_driver_sql(DELIVERED_SQL, columns)
            self.conn.exec_driver_sql(RECOVERED_SQL, (recovered,))
            return
        self.conn.execute(DELIVERED, [{"delivery_id": r.claimed.delivery_id, "at": r.at, "code": r.code} for r in done])
        self.conn.execute(
            update(Subscription)
            .where(col(Subscription.id).in_(recovered), col(Subscription.failing_since).is_not(None))
            .values(failing_since=None)
        )

    def _failed(self, result: Result) -> Attempt:
        claimed, code, now = result.claimed, result.code, result.at
        delivery_id, subscription_id = claimed.delivery_id, claimed.subscription.id
        this = col(Delivery.id) == delivery_id
        error = result.error or f"HTTP {code}"
        done = {"attempts": col(Delivery.attempts) + 1, "last_attempt_at": now, "last_response_code": code}
        failed = {**done, "last_error": error, "status": "failed", "next_attempt_at": None}
        if code == 410:
            self._update(this, **failed)
            self._disable(subscription_id, "gone", now)
            return Attempt(delivery_id, "gone", code, error)
        failing_since = self.conn.execute(
            update(Subscription)
            .where(col(Subscription.id) == subscription_id)
            .values(failing_since=func.coalesce(col(Subscription.failing_since), now))
            .returning(col(Subscription.failing_since))
        ).scalar()
        if failing_since is not None and now - failing_since >= self.disable_after:
            self._update(this, **failed)
            self._disable(subscription_id, "failing", now)
            return Attempt(delivery_id, "disabled", code, error)
        delay = self.policy.delay(claimed.attempts + 1)
        next_at = now + timedelta(seconds=delay)
        if (next_at - claimed.window_started_at).total_seconds() > self.policy.window_seconds:
            self._update(this, **failed)
            return Attempt(delivery_id, "failed", code, error)
        self._update(this, **done, last_error=error, next_attempt_at=next_at)
        return Attempt(delivery_id, "retry", code, error, delay)

    def _update(self, *where: Any, **values: Any) -> None:
        self.conn.execute(update(Delivery).where(*where).values(**values))

    def _disable(self, subscription_id: str, reason: str, now: datetime) -> None:
        """Disable the subscription if it is still enabled; remember it only if this call disabled it."""
        changed = self.conn.execute(
            update(Subscription)
            .where(col(Subscription.id) == subscription_id, col(Subscription.enabled))
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
            .returning(*Subscription.__table__.c)  # type: ignore[attr-defined]
        ).first()
        if changed is not None:
            self.disabled.append(Subscription(**changed._mapping))


class SubscriptionRows:
    """The subscriptions of a claim, read with it every time (a URL, secret or `enabled` may have just changed),
    each model object rebuilt only when its row changed: building one costs more than reading the row."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[Any, ...], Subscription]] = {}
        self._lock = threading.Lock()

    def load(self, conn: Connection, subscription_ids: Sequence[str]) -> dict[str, Subscription]:
        rows = conn.execute(select(Subscription).where(col(Subscription.id).in_(subscription_ids))).all()
        found: dict[str, Subscription] = {}
        with self._lock:
            for row in rows:
                values = tuple(row)
                known = self._known.get(row.id)
                if known is None or known[0] != values:
                    if len(self._known) >= self.LIMIT:
                        self._known.clear()
                    known = (values, Subscription(**row._mapping))
                    self._known[row.id] = known
                found[row.id] = known[1]
        return found
