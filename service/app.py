"""`create_app(settings)`: the ASGI application, wired explicitly from one settings object.

Follow a webhook: `service/ingest/receiver.py` → `service/ingest/enqueue.py` (Redis, dramatiq's queue) →
`workers/ingest/actors.py` → `workers/ingest/handle.py` → `workers/ledger/fold.py` (pure rules) /
`workers/ledger/store.py` (SQL)
→ `workers/ledger/changes.py` (Redis Stream) → `service/stream/routes.py` (SSE) and `service/api/reads.py` (JSON).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.api import action_routes as actions
from service.api import admin, health, openapi, subscriptions, token_routes
from service.api import reads as api
from service.api import scrape as metrics
from service.dashboard import page as dashboard
from service.ingest.enqueue import WebhookQueue
from service.ingest.guard import guarded
from service.ingest.receiver import Receiver
from service.security.middleware import security_middleware
from service.stream import routes as stream
from service.stream.fanout import Fanout
from service.stream.response import server_exiting
from workers.codat.client import CodatClient
from workers.ledger.changes import ChangeFeed
from workers.runtime.broker import async_redis, sync_redis
from workers.runtime.db import make_engine, require_current_schema, upgrade

log = logging.getLogger("synctrack.app")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_PARAMETER
    detail = exc.detail if exc.status_code != 404 else f"no route {request.method} {request.url.path}"
    return JSONResponse({"error": code.value, "detail": detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    redis = async_redis(settings)
    queue = WebhookQueue(redis, settings.redis_namespace, settings.dedupe_window_hours * 3600)
    receiver = Receiver(settings.webhook_secrets, queue, settings.max_body_bytes)
    fanout = Fanout(
        redis,
        settings.redis_namespace,
        settings.stream_client_buffer,
        heartbeat_seconds=settings.stream_heartbeat_seconds,
        send_timeout_seconds=settings.stream_send_timeout_seconds,
        exiting=server_exiting,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.embedded:
            upgrade(settings.database_url)
        else:
            require_current_schema(engine, settings.database_url)
        if not settings.webhook_secrets:
            log.warning("msg=no_webhook_secrets detail=%r", "set SYNCTRACK_WEBHOOK_SECRETS; every webhook is rejected")
        app.state.codat = CodatClient.from_settings(settings)
        await fanout.start()
        yield
        await fanout.stop()
        await app.state.codat.aclose()
        await redis.aclose()
        engine.dispose()

    webhooks = guarded(metrics.count_webhooks(receiver.handle), receiver, settings)
    routes = [
        Route("/webhooks/codat", webhooks, methods=["POST"]),
        *health.routes,
        *api.routes,
        *stream.routes,
        *actions.routes,
        *dashboard.routes,
        *subscriptions.routes,
        *admin.routes,
        *metrics.routes,
        *token_routes.routes,
        *openapi.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=security_middleware(settings),
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.redis = redis
    app.state.queue = queue
    app.state.fanout = fanout
    retention = settings.stream_retention_hours * 3600
    app.state.feed = ChangeFeed(sync_redis(settings), settings.redis_namespace, settings.stream_max_changes, retention)
    return app
