"""Latency from a webhook POST to its first SSE event at a client, open loop, at 200 and 1,000 events/s.

    .venv/bin/python bench/sse_latency.py [--rates 200,1000] [--seconds 10] [--workers 2] [--threads 32]
                                          [--database-url postgresql://postgres@127.0.0.1:5432/test]

Needs the real Redis. Runs one `synctrack web` and `--workers` `synctrack worker` processes (SQLite in
bench/out unless `--database-url`); one unfiltered client reads `/v1/stream`. Webhook i is due at
start + i / rate whatever the server does (open loop); its latency runs from that due time to the
first stream event whose `event_id` is its `webhook-id`: receiver, queue, worker, fold, commit, XADD,
the web process's reader, fan-out and the socket.

Baseline, same run: entries XADDed straight onto the change stream at the same rates, due time → SSE
event: the stream path alone (Redis, the reader, fan-out, sse-starlette, the socket).

Beside each row, where the time went: p50/p99 of each stage of `synctrack_event_latency_seconds` over the run
(`bench/stages.py`; measured from the receiver's receipt, so without the client's send and the HTTP request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_seconds, machine  # noqa: E402
from bench.openloop import raw_request  # noqa: E402
from bench.sse_support import SseReader, Stack, field, percentile, stack  # noqa: E402
from bench.stages import Histograms, breakdown, scrape  # noqa: E402
from tests.support.builders import BASE_TIME, connection_event, signed_request  # noqa: E402
from tests.support.services import REDIS_URL  # noqa: E402
from workers.ledger.changes import stream_key  # noqa: E402


@dataclass
class Run:
    path: str
    rate: float
    sent: int
    latencies_ms: list[float]
    late_sends: int
    cpu_share: float
    """CPU seconds of the service's processes over wall time (2.0 = both cores busy)."""
    resets: int
    stages: str = ""
    """The per-stage breakdown of the run (`bench.stages.breakdown`)."""

    def row(self) -> str:
        lost = self.sent - len(self.latencies_ms)
        return (
            f"| {self.path} | {self.rate:,.0f}/s | {self.sent:,} | {percentile(self.latencies_ms, 50):.1f} | "
            f"{percentile(self.latencies_ms, 99):.1f} | {max(self.latencies_ms, default=float('nan')):.1f} | "
            f"{lost} | {self.resets} | {self.late_sends} | {self.cpu_share:.2f} | {self.stages} |"
        )


def webhooks(count: int) -> list[tuple[str, bytes]]:
    """(webhook-id, raw HTTP request) for `count` `connection.connected` of distinct connections."""
    minutes = (datetime.now(UTC) - BASE_TIME).total_seconds() / 60
    requests = []
    for i in range(count):
        body = connection_event(minutes=minutes, connection_id=f"c-{uuid.uuid4().hex}", company_id=f"co-{i % 50}")
        raw, headers = signed_request(body)
        requests.append((headers["webhook-id"], raw_request("127.0.0.1", "/webhooks/codat", headers, raw)))
    return requests


async def post_sender(port: int) -> Callable[[bytes], Awaitable[None]]:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(payload: bytes) -> None:
        while True:
            reused = bool(idle)
            reader, writer = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionResetError):
                writer.close()
                if not reused:  # the server closes idle keep-alive connections; a fresh one must work
                    raise
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        if head[9:12] != b"202":
            raise RuntimeError(f"webhook refused: {head[:100]!r}")
        idle.append((reader, writer))

    return send


async def measure(target: Stack, rate: float, seconds: float, direct: bool) -> Run:
    count = int(rate * seconds)
    requests = webhooks(count)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    send_post = await post_sender(target.port)

    async def send(message_id: str, payload: bytes) -> None:
        if direct:
            data = json.dumps({"id": message_id, "event_id": message_id}, separators=(",", ":"))
            fields = {"event": "sync.started", "company_id": "co", "connection_id": "c", "data": data}
            await client.xadd(stream_key(target.namespace), fields)  # type: ignore[arg-type]
        else:
            await send_post(payload)

    sse = await SseReader.open(target.port)
    before: Histograms = await asyncio.to_thread(scrape, target.port)
    expected = {message_id for message_id, _ in requests}
    arrivals: dict[str, float] = {}
    complete = asyncio.Event()

    resets = 0

    async def read() -> None:
        nonlocal resets
        async for frame in sse.frames():
            if field(frame, b"event") == b"reset":
                resets += 1
                print("stream reset:", field(frame, b"data").decode(errors="replace")[:200], file=sys.stderr)
            data = field(frame, b"data")
            at = data.find(b'"event_id":"')
            if at < 0:
                continue
            message_id = data[at + 12 : data.find(b'"', at + 12)].decode()
            if message_id in expected and message_id not in arrivals:
                arrivals[message_id] = time.perf_counter()
                if len(arrivals) == len(expected):
                    complete.set()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.5)
    due: dict[str, float] = {}
    late = 0
    tasks = []
    cpu_before = cpu_seconds(target.pids)
    start = time.perf_counter() + 0.05
    for i, (message_id, payload) in enumerate(requests):
        due[message_id] = start + i / rate
        wait = due[message_id] - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.001:
            late += 1
        if direct:  # one connection, in order: an XADD takes ~0.1 ms, far below the gap between sends
            await send(message_id, payload)
        else:
            tasks.append(asyncio.ensure_future(send(message_id, payload)))
    await asyncio.gather(*tasks)
    try:
        await asyncio.wait_for(complete.wait(), timeout=60)
    except TimeoutError:
        pass
    wall = time.perf_counter() - start
    cpu = cpu_seconds(target.pids) - cpu_before
    reader.cancel()
    sse.close()
    await client.aclose()
    stages = breakdown(before, await asyncio.to_thread(scrape, target.port))
    latencies = [(arrivals[m] - due[m]) * 1000 for m in arrivals]
    path = "XADD → SSE (baseline)" if direct else "webhook POST → SSE"
    return Run(path, rate, count, latencies, late, cpu / wall, resets, stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,1000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, Run]], Run] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run

    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}; load average {os.getloadavg()[0]:.1f}")
    print(f"web: 1 process; workers: {args.workers} x {args.threads} threads; db: {args.database_url or 'SQLite'}")
    with stack("sse-latency", workers=args.workers, threads=args.threads, database_url=args.database_url) as target:
        runner(measure(target, 50, 2, direct=False))  # warm-up: connections, caches, first companies
        print(
            "| path | rate | events | p50 ms | p99 ms | max ms | lost | resets | late sends | service CPU (cores) "
            "| stages p50/p99 (count) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for rate in rates:
            for direct in (True, False):
                run = runner(measure(target, rate, args.seconds, direct))
                print(run.row(), flush=True)
                time.sleep(2)


if __name__ == "__main__":
    main()
