"""`/healthz` (the process answers) and `/readyz` (each dependency, reported separately)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.common.services import services


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _database_ok(request: Request) -> None:
    with services(request).engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _check(ping: Awaitable[object]) -> str:
    try:
        await ping
        return "ok"
    except Exception as exc:  # any failure is the answer, not an error of this endpoint
        return f"unavailable: {type(exc).__name__}: {exc}".splitlines()[0][:300]


async def readyz(request: Request) -> JSONResponse:
    checks = {
        "database": await _check(asyncio.to_thread(_database_ok, request)),
        "redis": await _check(asyncio.wait_for(services(request).redis.ping(), timeout=2)),
    }
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
