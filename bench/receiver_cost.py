"""What each layer in front of the webhook receiver costs, in CPU per request, in process.

    .venv/bin/python bench/receiver_cost.py [--requests 2000] [--rounds 5] [--concurrency 32]

Needs the real Redis. Builds the app as `synctrack web` does (`create_app`, lifespan run here) and drives
`POST /webhooks/codat` straight through ASGI (no sockets, no uvicorn: its HTTP parsing is the same for every
row, and is what `bench/bare_app.py` costs in `bench/ingest.py`) with distinct webhooks signed just before the
run, `--concurrency` requests in flight at a time so that requests share enqueue batches as under load.
Reported: this process's CPU time (`time.process_time`) per request — the least of `--rounds` interleaved
rounds, which other load on the machine inflates least — and the median, for

* a bare endpoint that reads the body and answers 202 (the baseline of the same run);
* the receiver's endpoint alone (source allow-list, verify, parse, de-duplicate and enqueue on the real Redis,
  the counters, answer);
* the whole app as served: the middleware stack and the router in front of the receiver (what a request to
  `synctrack web` runs once uvicorn has parsed it).

Counters are file-backed (prometheus multiprocess mode), as `synctrack web` runs them. Every request must be
answered 202.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import request_response  # noqa: E402

from bench.harness import machine  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from service.app import create_app  # noqa: E402
from service.ingest.enqueue import WebhookQueue  # noqa: E402
from service.ingest.receiver import Receiver  # noqa: E402
from tests.support.builders import SECRET  # noqa: E402
from tests.support.services import REDIS_URL  # noqa: E402
from tests.support.workload import Delivery, signed, webhook_mix  # noqa: E402
from workers.runtime.broker import async_redis  # noqa: E402
from workers.runtime.db import upgrade  # noqa: E402
from workers.runtime.metrics import MULTIPROC_ENV  # noqa: E402

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def scope_of(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    raw = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/codat",
        "raw_path": b"/webhooks/codat",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def bare(request: Request) -> Response:
    await request.body()
    return Response(b'{"status":"accepted"}', 202, media_type="application/json")


async def drive(app: App, requests: list[tuple[bytes, dict[str, Any]]], concurrency: int) -> float:
    """µs of CPU per request; asserts every answer is 202."""
    statuses: list[int] = []

    async def one(body: bytes, scope: dict[str, Any]) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    cpu = time.process_time()
    for start in range(0, len(requests), concurrency):
        await asyncio.gather(*(one(body, scope) for body, scope in requests[start : start + concurrency]))
    spent = time.process_time() - cpu
    assert set(statuses) == {202}, {s: statuses.count(s) for s in set(statuses)}
    return spent / len(requests) * 1e6


def signed_requests(count: int) -> list[tuple[bytes, dict[str, Any]]]:
    mix = [Delivery(f"msg_{uuid.uuid4().hex}", d.body) for d in webhook_mix(count, seed=count)]
    return [(d.body.encode(), scope_of(d.body.encode(), signed(d))) for d in mix]


async def run(requests: int, concurrency: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="receiver-cost-"))
    os.environ[MULTIPROC_ENV] = str(folder / "metrics")  # file-backed counters, as `synctrack web` runs them
    (folder / "metrics").mkdir()
    database_url = f"sqlite:///{folder / 'ledger.db'}"
    upgrade(database_url)
    namespace = f"bench-receiver-cost-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url, redis_url=REDIS_URL, redis_namespace=namespace, webhook_secrets=[SECRET]
    )
    app = create_app(settings)
    queue_redis = async_redis(settings)
    queue = WebhookQueue(queue_redis, namespace, settings.dedupe_window_hours * 3600)
    rows: list[tuple[str, App]] = [
        ("bare endpoint: read the body, answer 202 (baseline)", request_response(bare)),
        ("the receiver's endpoint alone", Receiver(settings, queue)),
        ("the whole app as served", app),
    ]
    print(f"machine: {machine()}; {requests} requests per row and round, {rounds} rounds, {concurrency} in flight")
    figures: dict[str, list[float]] = {name: [] for name, _ in rows}
    try:
        async with app.router.lifespan_context(app):
            for _, call in rows:  # warm-up: connections, caches, first-use imports
                await drive(call, signed_requests(200), concurrency)
            for _ in range(rounds):  # rows interleaved, so a burst of load elsewhere hits all of them
                for name, call in rows:
                    figures[name].append(await drive(call, signed_requests(requests), concurrency))
    finally:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        print("| path | µs CPU per request: least of the rounds | median |")
        print("|---|---|---|")
        for name, values in figures.items():
            if values:
                print(f"| {name} | {min(values):.1f} | {sorted(values)[len(values) // 2]:.1f} |")
        keys = [key async for key in client.scan_iter(f"{namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await queue_redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
