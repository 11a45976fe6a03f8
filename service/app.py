"""`create_app(settings)`: the ASGI application, wired explicitly from one settings object.

Follow a webhook: `service/receiver.py` → `service/enqueue.py` (Redis, dramatiq's queue) →
`workers/actors.py` → `workers/ingest.py` → `workers/fold.py` (pure rules) / `workers/store.py` (SQL)
→ `workers/changes.py` (Redis Stream) → `service/stream.py` (SSE) and `service/api.py` (JSON).
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
from service import api, health
from service.enqueue import WebhookQueue
from service.receiver import Receiver
from workers.broker import async_redis
from workers.db import make_engine, require_current_schema, upgrade

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

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.embedded:
            upgrade(settings.database_url)
        else:
            require_current_schema(engine, settings.database_url)
        if not settings.webhook_secrets:
            log.warning("msg=no_webhook_secrets detail=%r", "set SYNCTRACK_WEBHOOK_SECRETS; every webhook is rejected")
        yield
        await redis.aclose()
        engine.dispose()

    routes = [
        Route("/webhooks/codat", receiver.handle, methods=["POST"]),
        *health.routes,
        *api.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.redis = redis
    app.state.queue = queue
    return app
