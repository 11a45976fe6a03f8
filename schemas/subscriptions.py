"""Outbound subscriptions: what the API accepts and returns for subscriptions and their deliveries.

A subscription names a URL and a filter (event types, companies); Synctrack POSTs each matching
change of the stream to that URL as a Standard Webhooks message: body ``{id, type, created_at, data}``
with ``data`` the same Connection or Sync object the API and the stream carry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from schemas.api import UtcTime

STREAM_EVENT_TYPES = (
    "connection.updated",
    "sync.started",
    "sync.completed",
    "sync.failed",
    "connection.freshness_changed",
    "connection.initial_read_completed",
    "sync.delayed",
    "connection.health_changed",
    "bundle.ready",
    "platform.incident_opened",
    "platform.incident_closed",
)
"""What the change feed publishes for ledger changes (``workers.ledger.fold.ChangeKind``), for a
connection's freshness and health (``workers.ledger.announce``, ``workers.jobs.freshness_check``), for a sync
Codat is still running (``workers.jobs.stale``), for a bundle refresh that finished (``workers.ledger.bundles``)
and for a platform's incidents (``workers.ledger.incidents``: no company, so only subscriptions without a company
filter receive them)."""

SUBSCRIPTION_DISABLED = "subscription.disabled"
PING = "ping"
EVENT_TYPES = (*STREAM_EVENT_TYPES, SUBSCRIPTION_DISABLED)
"""Event types a subscription can ask for; ``"*"`` means all of them. A ``ping`` is sent on demand only."""

DeliveryStatus = Literal["pending", "delivered", "failed"]
DisabledReason = Literal["manual", "gone", "failing"]


def _event_types(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if not value:
        raise ValueError('give at least one event type, or ["*"] for all')
    unknown = sorted(set(value) - {*EVENT_TYPES, "*"})
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)} or *")
    return ["*"] if "*" in value else sorted(set(value))


def _company_ids(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    cleaned = sorted({c.strip() for c in value if c.strip()})
    if not cleaned:
        raise ValueError("give at least one company id, or null for every company")
    return cleaned


class SubscriptionIn(BaseModel):
    """`POST /v1/subscriptions`."""

    model_config = ConfigDict(extra="forbid")

    url: str
    event_types: list[str] = ["*"]
    company_ids: list[str] | None = None
    description: str | None = None

    _check_types = field_validator("event_types")(_event_types)
    _check_companies = field_validator("company_ids")(_company_ids)


class SubscriptionPatch(BaseModel):
    """`PATCH /v1/subscriptions/{id}`: only the fields given change; `enabled: true` re-enables."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    event_types: list[str] | None = None
    company_ids: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None

    _check_types = field_validator("event_types")(_event_types)
    _check_companies = field_validator("company_ids")(_company_ids)


class SubscriptionOut(BaseModel):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    company_ids: list[str] | None
    enabled: bool
    disabled_reason: DisabledReason | None
    disabled_at: UtcTime | None
    failing_since: UtcTime | None
    """Start of the current run of failed attempts; null after any success."""
    created_at: UtcTime
    updated_at: UtcTime
    previous_secret_expires_at: UtcTime | None
    """While set and in the future, deliveries are signed with the previous secret too."""


class SubscriptionWithSecret(SubscriptionOut):
    """Returned by create and rotate-secret only: the signing secret is shown once."""

    secret: str


class DeliveryOut(BaseModel):
    id: str
    """The `webhook-id` header: the same on every attempt, the receiver's idempotency key."""
    subscription_id: str
    event_id: str
    """The body's `id`: the change-stream id of the change (the SSE event id), or `ping_…`."""
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_response_code: int | None
    last_error: str | None
    last_attempt_at: UtcTime | None
    next_attempt_at: UtcTime | None
    delivered_at: UtcTime | None
    created_at: UtcTime


class DeliveryDetail(DeliveryOut):
    body: Any
    """The JSON body as sent (the same on every attempt)."""


class ReplayIn(BaseModel):
    """`POST /v1/subscriptions/{id}/replay`: re-send the changes of a time range from the change stream."""

    model_config = ConfigDict(extra="forbid")

    since: UtcTime
    until: UtcTime | None = None
    include_delivered: bool = False
    """Also re-send changes this subscription already received (same `webhook-id`)."""

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is UTC."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class ReplayOut(BaseModel):
    matched: int
    """Changes in the range that match the subscription's filter."""
    queued: int
    already_delivered: int
    """Matched changes this subscription had already received (queued again only with `include_delivered`)."""
    oldest_available: UtcTime | None
    """The oldest change the stream still holds; a `since` before it cannot be replayed in full."""
    truncated: bool
