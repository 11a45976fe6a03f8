"""The stream's cost per client, in process: Python memory held per connected client, CPU per delivered change.

    .venv/bin/python bench/stream_cost.py [--clients 1000] [--changes 50]

Needs the real Redis. Builds the app as `synctrack web` does (`create_app`, lifespan run here) and connects
`--clients` unfiltered admin clients straight through ASGI (no sockets, no uvicorn); each reads its snapshot
(an empty ledger). Then `--changes` changes are XADDed and every client receives every one.

* **KiB per client**: `tracemalloc`'s count of Python bytes allocated and still held after the clients
  connected, divided by the clients — the app's own share of a stream connection (uvicorn's protocol objects
  come on top and are the same for both rows).
* **µs CPU per delivery**: this process's CPU time (`time.process_time`, which the machine's other load does
  not inflate) while the changes reach every client, over clients × changes.

Baseline, same run: the stream route alone, in a Starlette app without the middleware stack (the caller's
principal put on the scope, as authentication would), sharing the app's fan-out. Figures are repeatable on a
busy machine; RSS and latency on real sockets are `bench/sse_fanout.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bench.harness import machine  # noqa: E402
from schemas.settings import Settings  # noqa: E402
from service.app import create_app  # noqa: E402
from service.common.services import services  # noqa: E402
from service.security.tokens import Principal, hash_token  # noqa: E402
from service.stream.fanout import Fanout  # noqa: E402
from service.stream.routes import STREAM_PATH, stream  # noqa: E402
from tests.support.services import REDIS_URL  # noqa: E402
from workers.ledger.changes import stream_key  # noqa: E402
from workers.runtime.db import upgrade  # noqa: E402

TOKEN = "sta_bench-stream-token-0123456789abcdefghijklmn"
PADDING = "x" * 300

Entry = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]


def stream_scope(principal: Principal | None = None) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"accept", b"text/event-stream"), (b"authorization", f"Bearer {TOKEN}".encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/stream",
        "raw_path": b"/v1/stream",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {"principal": principal} if principal else {},
    }


class Client:
    """One connected client: counts the change frames it was sent; leaves when told to."""

    __slots__ = ("frames", "opened", "gone", "task")

    def __init__(self) -> None:
        self.frames = 0
        self.opened = False
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        await self.gone
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
        elif b"\nevent: snapshot\n" in body:
            self.opened = True
        else:  # a chunk may carry several changes (those buffered while the client was busy)
            self.frames += body.count(b"\nevent: sync.started\n")


async def measure(app: Starlette, entry: Entry, clients: int, changes: int, alone: bool) -> tuple[float, float]:
    """(KiB of Python memory per client, µs of CPU per delivered change) through `entry` (`alone`: without
    the middleware stack, so the caller is put on the scope)."""
    publisher = redis.asyncio.Redis.from_url(REDIS_URL)
    key = services(app).get(Fanout).key
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    connected = []
    for _ in range(clients):
        client = Client()
        scope = stream_scope(Principal("admin", "bench") if alone else None)
        client.task = asyncio.create_task(entry(scope, client.receive, client.send))
        connected.append(client)
        if len(connected) % 200 == 0:
            await asyncio.sleep(0.05)
    while not all(c.opened for c in connected):  # every client has its snapshot: all are live
        await asyncio.sleep(0.05)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()

    data = json.dumps({"t": time.time(), "padding": PADDING})
    cpu = time.process_time()
    pipe = publisher.pipeline(transaction=False)
    for i in range(changes):
        pipe.xadd(key, {"event": "sync.started", "company_id": "co", "connection_id": f"c{i}", "data": data})
    await pipe.execute()
    deadline = time.monotonic() + 120
    while sum(c.frames for c in connected) < clients * changes and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    spent = time.process_time() - cpu
    delivered = sum(c.frames for c in connected)
    assert delivered == clients * changes, f"{delivered} of {clients * changes} delivered"
    for client in connected:
        client.gone.set_result(None)
    await asyncio.gather(*(c.task for c in connected if c.task is not None))
    await publisher.aclose()
    return held / clients / 1024, spent / delivered * 1e6


async def run(clients: int, changes: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="stream-cost-"))
    database_url = f"sqlite:///{folder / 'ledger.db'}"
    upgrade(database_url)
    namespace = f"bench-stream-cost-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        admin_token_hashes=[hash_token(TOKEN)],
        stream_client_buffer=max(1000, 2 * changes),
    )
    app = create_app(settings)
    # The baseline: the stream route alone, sharing the app's fan-out.
    route_alone = Starlette(routes=[Route(STREAM_PATH, stream)])
    route_alone.state = app.state
    print(f"machine: {machine()}; clients {clients}, changes {changes} (each to every client)")
    print("| entry | KiB per client (Python, app's share) | µs CPU per delivered change |")
    print("|---|---|---|")
    try:
        async with app.router.lifespan_context(app):
            await measure(app, route_alone, 100, 5, alone=True)  # warm-up: first-use caches stay out of both rows
            await measure(app, app, 100, 5, alone=False)
            baseline = await measure(app, route_alone, clients, changes, alone=True)
            served = await measure(app, app, clients, changes, alone=False)
    finally:
        cleanup = redis.asyncio.Redis.from_url(REDIS_URL)
        await cleanup.delete(stream_key(namespace))
        await cleanup.aclose()
    print(f"| the stream route alone (baseline) | {baseline[0]:.1f} | {baseline[1]:.1f} |")
    print(f"| the app as served | {served[0]:.1f} | {served[1]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.clients, args.changes))


if __name__ == "__main__":
    main()
