"""Outbound subscriptions: what the API accepts and returns for subscriptions and their deliveries.

Each change of the stream that matches a subscription's filter is POSTed to its URL as a Standard Webhooks message,
``{id, type, created_at, data}``, ``data`` being the object the API and the stream carry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from schemas.api import ApiModel, RequestBody, TimeIn, UtcTime

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
"""What the change feed publishes; a platform incident names no company, so only subscriptions without a company
filter receive it."""

SUBSCRIPTION_DISABLED = "subscription.disabled"
PING = "ping"
EVENT_TYPES = (*STREAM_EVENT_TYPES, SUBSCRIPTION_DISABLED)
"""Event types a subscription can ask for; ``"*"`` means all of them. A ``ping`` is sent on demand only."""

DeliveryStatus = Literal["pending", "delivered", "failed"]
DisabledReason = Literal["manual", "gone", "failing"]


def _event_types(value: list[str]) -> list[str]:
    if not value:
        raise ValueError('give at least one event type, or ["*"] for all')
    unknown = sorted(set(value) - {*EVENT_TYPES, "*"})
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)} or *")
    return ["*"] if "*" in value else sorted(set(value))


def _company_ids(value: list[str]) -> list[str]:
    cleaned = sorted({c.strip() for c in value if c.strip()})
    if not cleaned:
        raise ValueError("give at least one company id, or null for every company")
    return cleaned


EventTypes = Annotated[list[str], AfterValidator(_event_types)]
CompanyIds = Annotated[list[str], AfterValidator(_company_ids)]


class SubscriptionIn(RequestBody):
    """`POST /v1/subscriptions`."""

    url: str
    event_types: EventTypes = ["*"]
    company_ids: CompanyIds | None = None
    description: str | None = None


class SubscriptionPatch(RequestBody):
    """`PATCH /v1/subscriptions/{id}`: only the fields given change; `enabled: true` re-enables."""

    url: str | None = None
    event_types: EventTypes | None = None
    company_ids: CompanyIds | None = None
    description: str | None = None
    enabled: bool | None = None


class SubscriptionOut(ApiModel):
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


class DeliveryOut(ApiModel):
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


class ReplayIn(RequestBody):
    """`POST /v1/subscriptions/{id}/replay`: re-send the changes of a time range from the change stream."""

    since: TimeIn
    until: TimeIn | None = None
    include_delivered: bool = False
    """Also re-send changes this subscription already received (same `webhook-id`)."""


class ReplayOut(ApiModel):
    matched: int
    """Changes in the range that match the subscription's filter."""
    queued: int
    already_delivered: int
    """Matched changes this subscription had already received (queued again only with `include_delivered`)."""
    oldest_available: UtcTime | None
    """The oldest change the stream still holds; a `since` before it cannot be replayed in full."""
    truncated: bool
