"""The baseline for bench/ingest.py: a bare Starlette endpoint that reads the body and answers 202.

Served exactly like Synctrack (`uvicorn bench.bare_app:app`, same process count and loop/http options)
so the difference in a run is the receiver's own work: verification, de-duplication, durable enqueue.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def accept(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"status": "accepted"}, status_code=202)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/webhooks/codat", accept, methods=["POST"]), Route("/healthz", healthz)])
