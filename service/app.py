"""`create_app(settings)`: the ASGI application, wired explicitly from one settings object.

Follow a webhook: `service/ingest/receiver.py` → `service/ingest/enqueue.py` (Redis, dramatiq's queue) →
`workers/ingest/actors.py` → `workers/ingest/handle.py` → `workers/ledger/fold.py` (pure rules) /
`workers/ledger/store.py` (SQL) → `workers/ledger/changes.py` (Redis Stream) → `service/stream/fanout.py` →
`service/stream/response.py` (SSE); `service/api/reads.py` answers the JSON API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode, SynctrackError
from schemas.settings import Settings
from service.api import action_routes as actions
from service.api import (
    admin,
    bundles,
    health,
    imports,
    incidents,
    metrics_endpoint,
    missed,
    openapi,
    subscriptions,
    timeline,
    token_routes,
)
from service.api import reads as api
from service.api.action_limit import ActionLimit
from service.common.errors import error_response
from service.common.services import Services
from service.dashboard import page as dashboard
from service.ingest.enqueue import WebhookQueue
from service.ingest.receiver import Receiver
from service.security.middleware import security_middleware
from service.security.revocation import RevocationList
from service.stream import routes as stream
from service.stream.fanout import Fanout, StreamUnavailable
from service.stream.response import server_exiting
from workers.codat.client import CodatClient
from workers.ledger.changes import ChangeFeed
from workers.ledger.freshness import FreshnessPolicy
from workers.ops.replay import ReplayJobNotFound
from workers.outbound.deliver import Deliverer
from workers.outbound.url_policy import UnsafeUrl
from workers.runtime.broker import async_redis, sync_redis
from workers.runtime.db import make_engine, reader, require_current_schema, upgrade

log = logging.getLogger("synctrack.app")

WEBHOOK_PATH = "/webhooks/codat"


async def answer_error(request: Request, exc: Exception) -> Response:
    """The app's one exception handler, Synctrack's errors and the router's 404/405 alike: the one map to
    `ErrorCode`. Raises `exc` again for anything without an answer of its own (a bug: the server's 500)."""
    match exc:
        case ApiError():
            error = exc
        case UnsafeUrl():
            error = ApiError(400, ErrorCode.INVALID_URL, str(exc))
        case ReplayJobNotFound():
            error = ApiError(404, ErrorCode.NOT_FOUND, f"no replay job with id {exc.job_id!r}")
        case StreamUnavailable():
            error = stream.unavailable()
        case HTTPException(status_code=404):
            error = ApiError(
                404, ErrorCode.NOT_FOUND, f"no route {request.method} {request.url.path}", dict(exc.headers or {})
            )
        case HTTPException():
            error = ApiError(exc.status_code, ErrorCode.INVALID_PARAMETER, exc.detail, dict(exc.headers or {}))
        case _:
            raise exc
    return error_response(error)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    redis = async_redis(settings)
    blocking = sync_redis(settings)
    revocations = RevocationList(redis, settings.redis_namespace, settings.token_max_ttl_seconds)
    fanout = Fanout(
        redis,
        settings.redis_namespace,
        settings.stream_client_buffer,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        send_timeout_seconds=settings.stream_send_timeout_seconds,
        exiting=server_exiting,
        revocations=revocations,
    )
    retention = settings.stream_retention_hours * 3600
    shared = Services(
        settings=settings,
        engine=engine,
        reads=reader(engine),
        freshness=FreshnessPolicy.from_settings(settings),
        redis=redis,
        admin_redis=blocking,
        feed=ChangeFeed(blocking, settings.redis_namespace, settings.stream_max_changes, retention),
        deliverer=Deliverer(settings, engine, blocking),
        owned=(fanout, revocations, ActionLimit(redis, settings.redis_namespace, settings.actions_per_minute)),
    )
    queue = WebhookQueue(redis, settings.redis_namespace, settings.dedupe_window_hours * 3600)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.embedded:
            upgrade(settings.database_url)
        else:
            require_current_schema(engine)
        if not settings.webhook_secrets:
            log.warning("msg=no_webhook_secrets detail=%r", "set SYNCTRACK_WEBHOOK_SECRETS; every webhook is rejected")
        shared.codat = codat = CodatClient.from_settings(settings)
        await fanout.start()
        yield
        await fanout.stop()
        await codat.aclose()
        await redis.aclose()
        shared.deliverer.close()
        blocking.close()
        engine.dispose()

    routes = [
        Route(WEBHOOK_PATH, Receiver(settings, queue), methods=["POST"]),
        *health.routes,
        *api.routes,
        *timeline.routes,
        *incidents.routes,
        *stream.routes,
        *actions.routes,
        *bundles.routes,
        *dashboard.routes,
        *subscriptions.routes,
        *admin.routes,
        *missed.routes,
        *imports.routes,
        *metrics_endpoint.routes,
        *token_routes.routes,
        *openapi.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=security_middleware(settings),
        lifespan=lifespan,
        exception_handlers={SynctrackError: answer_error, HTTPException: answer_error},
    )
    app.state.services = shared
    return app
