"""What the subscription routes share: the web process's delivery context and request helpers.

The context (a Redis client for the `deliveries` queue, a `Deliverer` for pings) is built by
`create_app` and kept on `app.state.outbound`; neither opens a connection before its first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.common.json_body import read_model as read_model
from workers.ledger.tables import Subscription
from workers.outbound.deliver import Deliverer
from workers.outbound.url_policy import check_url


@dataclass
class Outbound:
    settings: Settings
    engine: Engine
    redis: Redis
    deliverer: Deliverer


def outbound(request: Request) -> Outbound:
    context: Outbound = request.app.state.outbound
    return context


def now() -> datetime:
    return datetime.now(UTC)


def checked_url(context: Outbound, url: str) -> str:
    """`url` if outbound deliveries may go there; raises `UnsafeUrl` (400 `invalid_url`) with the reason."""
    return check_url(
        url.strip(),
        allow_http=context.settings.subscriptions_allow_http,
        allow_private=context.settings.subscriptions_allow_private,
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
