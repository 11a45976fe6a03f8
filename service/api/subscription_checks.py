"""The checks the subscription and delivery routes share: a destination outbound deliveries may reach (400),
a subscription that exists (404) and is enabled (409)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.common.json_body import read_model as read_model
from workers.ledger.tables import Subscription
from workers.outbound.url_policy import check_url


def now() -> datetime:
    return datetime.now(UTC)


def checked_url(settings: Settings, url: str) -> str:
    """`url` if outbound deliveries may go there; raises `UnsafeUrl` (400 `invalid_url`) with the reason."""
    return check_url(
        url.strip(),
        allow_http=settings.subscriptions_allow_http,
        allow_private=settings.subscriptions_allow_private,
    )


def get_subscription(session: Session, subscription_id: str) -> Subscription:
    row = session.get(Subscription, subscription_id)
    if row is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no subscription with id {subscription_id!r}")
    return row


def require_enabled(row: Subscription) -> None:
    if not row.enabled:
        raise ApiError(
            409,
            ErrorCode.SUBSCRIPTION_DISABLED,
            f"subscription {row.id} is disabled ({row.disabled_reason}); PATCH it with enabled=true first",
        )
