"""`/v1/subscriptions`: outbound webhook subscriptions — create, read, change, delete, rotate, test — and their
delivery log, manual retry and replay of a time range. The signing secret is in the answer to create and
rotate-secret only."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from schemas.subscriptions import PING, ReplayIn, SubscriptionIn, SubscriptionPatch
from service.api.reads import bool_param, newest_first, page_of
from service.common.json_body import read_model
from service.common.pagination import list_param
from service.common.services import services
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.dispatch import event_body
from workers.outbound.range_replay import replay
from workers.outbound.signing import new_secret
from workers.outbound.url_policy import check_url
from workers.outbound.views import delivery_detail, delivery_out, subscription_out, subscription_with_secret
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


async def create_subscription(request: Request) -> JSONResponse:
    body = await read_model(request, SubscriptionIn)

    def create() -> JSONResponse:
        context = services(request)
        at = now()
        row = Subscription(
            id=f"sub_{uuid.uuid4().hex}",
            url=checked_url(context.settings, body.url),
            description=body.description,
            event_types=body.event_types,
            company_ids=body.company_ids,
            secret=new_secret(),
            created_at=at,
            updated_at=at,
        )
        with Session(context.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        log.info("subscription=%s action=created types=%s", row.id, ",".join(row.event_types))
        return JSONResponse(subscription_with_secret(row, at).model_dump(mode="json"), status_code=201)

    return await run_in_threadpool(create)


def list_subscriptions(request: Request) -> JSONResponse:
    query, limit = newest_first(request, select(Subscription), Subscription.created_at, Subscription.id)
    if (enabled := bool_param(request, "enabled")) is not None:
        query = query.where(col(Subscription.enabled) == enabled)
    with Session(services(request).engine) as session:
        rows = session.exec(query).all()
    at = now()
    return page_of(rows, limit, lambda row: subscription_out(row, at), "created_at", "id")


def get_subscription_route(request: Request) -> JSONResponse:
    with Session(services(request).engine) as session:
        row = get_subscription(session, request.path_params["subscription_id"])
    return JSONResponse(subscription_out(row, now()).model_dump(mode="json"))


async def patch_subscription(request: Request) -> JSONResponse:
    patch = await read_model(request, SubscriptionPatch)
    given = patch.model_fields_set

    def apply() -> JSONResponse:
        context = services(request)
        url = checked_url(context.settings, patch.url) if patch.url is not None else None
        at = now()
        with Session(context.engine, expire_on_commit=False) as session, session.begin():
            row = get_subscription(session, request.path_params["subscription_id"])
            if url is not None:
                row.url = url
            if patch.event_types is not None:
                row.event_types = patch.event_types
            if "company_ids" in given:
                row.company_ids = patch.company_ids
            if "description" in given:
                row.description = patch.description
            if patch.enabled is True and not row.enabled:
                row.enabled, row.disabled_reason, row.disabled_at, row.failing_since = True, None, None, None
            elif patch.enabled is False and row.enabled:
                row.enabled, row.disabled_reason, row.disabled_at = False, "manual", at
            row.updated_at = at
        log.info("subscription=%s action=updated fields=%s", row.id, ",".join(sorted(given)))
        return JSONResponse(subscription_out(row, at).model_dump(mode="json"))

    return await run_in_threadpool(apply)


def delete_subscription(request: Request) -> Response:
    with Session(services(request).engine) as session, session.begin():
        row = get_subscription(session, request.path_params["subscription_id"])
        session.delete(row)  # its deliveries go with it (ON DELETE CASCADE)
    log.info("subscription=%s action=deleted", row.id)
    return Response(status_code=204)


def rotate_secret(request: Request) -> JSONResponse:
    """New secret now; the old one keeps signing beside it until the overlap ends."""
    context = services(request)
    at = now()
    with Session(context.engine, expire_on_commit=False) as session, session.begin():
        row = get_subscription(session, request.path_params["subscription_id"])
        row.previous_secret = row.secret
        row.previous_secret_expires_at = at + timedelta(seconds=context.settings.subscriptions_secret_overlap_seconds)
        row.secret = new_secret()
        row.updated_at = at
    log.info("subscription=%s action=secret_rotated", row.id)
    return JSONResponse(subscription_with_secret(row, at).model_dump(mode="json"))


def send_test(request: Request) -> JSONResponse:
    """Send a `ping` now and answer with its delivery (retried like any other if it failed)."""
    context = services(request)
    at = now()
    with Session(context.engine, expire_on_commit=False) as session, session.begin():
        row = get_subscription(session, request.path_params["subscription_id"])
        require_enabled(row)
        event_id = f"ping_{uuid.uuid4().hex}"
        data = {"subscription_id": row.id, "message": "Synctrack test event"}
        delivery = Delivery(
            id=f"msg_{uuid.uuid4().hex}",
            subscription_id=row.id,
            event_id=event_id,
            event_type=PING,
            body=event_body(event_id, PING, at, data),
            next_attempt_at=at,
            window_started_at=at,
            created_at=at,
        )
        session.add(delivery)
    context.deliverer.run(delivery.id)
    with Session(context.engine) as session:
        stored = session.get(Delivery, delivery.id)
    return JSONResponse(delivery_out(stored or delivery).model_dump(mode="json"))


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
    Route("/v1/subscriptions", create_subscription, methods=["POST"]),
    Route("/v1/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}", get_subscription_route, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}", patch_subscription, methods=["PATCH"]),
    Route("/v1/subscriptions/{subscription_id}", delete_subscription, methods=["DELETE"]),
    Route("/v1/subscriptions/{subscription_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/test", send_test, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/replay", replay_range, methods=["POST"]),
]
