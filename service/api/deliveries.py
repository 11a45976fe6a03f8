"""A subscription's delivery log, manual retry, replay of a time range, and the checks the subscription routes
share: a destination deliveries may reach (400), a subscription that exists (404) and is enabled (409)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from schemas.subscriptions import ReplayIn
from service.api.reads import newest_first, page_of
from service.common.json_body import read_model
from service.common.pagination import list_param
from service.common.services import services
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.range_replay import replay
from workers.outbound.url_policy import check_url
from workers.outbound.views import delivery_detail, delivery_out
from workers.runtime.delivery_queue import enqueue_deliveries

log = logging.getLogger("synctrack.subscriptions")

STATUSES = ("pending", "delivered", "failed")


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


def list_deliveries(request: Request) -> JSONResponse:
    subscription_id = request.path_params["subscription_id"]
    query, limit = newest_first(request, select(Delivery), Delivery.created_at, Delivery.id)
    query = query.where(col(Delivery.subscription_id) == subscription_id)
    if statuses := list_param(request, "status"):
        if set(statuses) - set(STATUSES):
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"status must be among {', '.join(STATUSES)}")
        query = query.where(col(Delivery.status).in_(statuses))
    if types := list_param(request, "event_type"):
        query = query.where(col(Delivery.event_type).in_(types))
    with Session(services(request).engine) as session:
        get_subscription(session, subscription_id)
        rows = session.exec(query).all()
    return page_of(rows, limit, delivery_out, "created_at", "id")


def _delivery(session: Session, request: Request) -> Delivery:
    subscription_id = request.path_params["subscription_id"]
    delivery_id = request.path_params["delivery_id"]
    row = session.get(Delivery, delivery_id)
    if row is None or row.subscription_id != subscription_id:
        get_subscription(session, subscription_id)
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no delivery {delivery_id!r} for subscription {subscription_id!r}")
    return row


def get_delivery(request: Request) -> JSONResponse:
    with Session(services(request).engine) as session:
        row = _delivery(session, request)
    return JSONResponse(delivery_detail(row).model_dump(mode="json"))


def retry_delivery(request: Request) -> JSONResponse:
    context = services(request)
    at = now()
    with Session(context.engine, expire_on_commit=False) as session, session.begin():
        row = _delivery(session, request)
        require_enabled(get_subscription(session, row.subscription_id))
        row.status, row.next_attempt_at, row.window_started_at = "pending", at, at
    enqueue_deliveries(context.admin_redis, context.settings.redis_namespace, [row.id])
    log.info("delivery=%s subscription=%s action=retry", row.id, row.subscription_id)
    return JSONResponse(delivery_out(row).model_dump(mode="json"), status_code=202)


async def replay_range(request: Request) -> JSONResponse:
    body = await read_model(request, ReplayIn)

    def run() -> JSONResponse:
        context = services(request)
        until = body.until or now()
        if body.since >= until:
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, "since must be before until")
        with Session(context.engine, expire_on_commit=False) as session:
            row = get_subscription(session, request.path_params["subscription_id"])
        require_enabled(row)
        result = replay(
            context.engine,
            context.admin_redis,
            context.settings.redis_namespace,
            row,
            body.since,
            until,
            body.include_delivered,
        )
        log.info("subscription=%s action=replay matched=%d queued=%d", row.id, result.matched, result.queued)
        return JSONResponse(result.model_dump(mode="json"), status_code=202)

    return await run_in_threadpool(run)


routes = [
    Route("/v1/subscriptions/{subscription_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/replay", replay_range, methods=["POST"]),
]
