"""What the security middleware (header limits + `AuthMiddleware`) costs per request, in process.

Each case drives the app's real middleware stack with ASGI scopes, in front of an endpoint that answers at
once, and compares with the same endpoint without the middleware (the baseline of the same run):

* the webhook route (signature-only: the rule lookup is all that runs);
* a read with an admin token (one SHA-256, constant-time compares);
* a read with a company token on its own company (HMAC verify + JSON);
* the same on a connection (plus the database lookup of the connection's company, in a thread).

    .venv/bin/python bench/auth_overhead.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from service.security.middleware import security_middleware
from service.security.rules import RULES
from service.security.tokens import TokenSigner, hash_token
from workers.ingest.handle import handle_webhook
from workers.runtime.db import make_engine, upgrade

ADMIN = "sta_bench-admin-token-0123456789abcdefghijklmnop"
KEY = "bench-signing-key-0123456789abcdefghijklmnopqrstuv"


async def ok(request: Any) -> Response:
    return Response(b"")


def app(settings: Settings, secured: bool) -> Starlette:
    routes = [Route(path, ok, methods=[m if m != "*" else "GET"]) for (m, path) in RULES if path != "/static"]
    built = Starlette(routes=routes, middleware=security_middleware(settings) if secured else [])
    built.state.services = services(create_app(settings))  # the app's own: engine, revocation list
    return built


def scope(application: Starlette, method: str, path: str, token: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("bench", 80),
        "state": {},
    }


async def per_request_us(application: Starlette, make: Callable[[], dict[str, Any]], count: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    call: Callable[..., Awaitable[None]] = application
    for _ in range(200):  # warm up
        await call(make(), receive, send)
    started = time.perf_counter()
    for _ in range(count):
        await call(make(), receive, send)
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    settings = Settings(
        database_url=f"sqlite:///{folder / 'bench.db'}",
        admin_token_hashes=[hash_token(ADMIN)],
        token_signing_key=KEY,
        _env_file=None,
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    body = {
        "id": str(uuid.uuid4()),
        "eventType": "connection.connected",
        "generatedDate": "2026-11-25T10:00:00Z",
        "payload": {"referenceCompany": {"id": "co-1", "name": "Bench"}, "connection": {"id": "conn-1"}},
    }
    handle_webhook(engine, None, "msg-bench", json.dumps(body), "2026-11-25T10:00:00+00:00")
    company, _ = TokenSigner(KEY).mint("co-1", ["read"], 3600, time.time())
    cases = [
        ("webhook route (signature only)", "POST", "/webhooks/codat", None),
        ("read, admin token", "GET", "/v1/companies", ADMIN),
        ("read, company token, company in path", "GET", "/v1/companies/co-1/connections", company),
        ("read, company token, connection lookup", "GET", "/v1/connections/conn-1", company),
    ]
    bare, secured = app(settings, False), app(settings, True)
    print(f"{'case':45} {'baseline µs':>12} {'secured µs':>11} {'overhead µs':>12}")
    for name, method, path, token in cases:
        base = asyncio.run(per_request_us(bare, partial(scope, bare, method, path, None), args.requests))
        sec = asyncio.run(per_request_us(secured, partial(scope, secured, method, path, token), args.requests))
        print(f"{name:45} {base:12.1f} {sec:11.1f} {sec - base:12.1f}")


if __name__ == "__main__":
    main()
