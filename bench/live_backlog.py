"""Live events while a backlog of old ones drains: webhook POST → first SSE event of live webhooks, open loop.

    .venv/bin/python bench/live_backlog.py [--backlog 30000] [--live-rate 20] [--workers 2] [--threads 32]
                                           [--database-url postgresql://postgres@127.0.0.1:5432/test]

Needs the real Redis. Runs one `synctrack web` and `--workers` `synctrack worker` processes with the default live
window (`10m`). First the baseline: live webhooks (generated now) at `--live-rate` for 10 s with nothing else to do.
Then `--backlog` webhooks generated three hours ago are posted as fast as the receiver takes them — what Codat's
"recover failed messages" does — and live webhooks go on at the same rate until the backlog has drained; their
latency is the figure. Prints the backfill queue's depth after the posting and how long the backlog took to drain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import machine  # noqa: E402
from bench.openloop import raw_request  # noqa: E402
from bench.sse_latency import post_sender  # noqa: E402
from bench.sse_support import AUTH, SseReader, Stack, field, percentile, stack  # noqa: E402
from bench.stages import breakdown, scrape  # noqa: E402
from tests.support.builders import BASE_TIME, connection_event, signed_request  # noqa: E402

LIVE_COMPANY = "co-live"


def signed(count: int, generated: datetime, prefix: str, company: str | None = None) -> list[tuple[str, bytes]]:
    """(webhook-id, raw HTTP request) of `count` `connection.connected` of distinct connections (of `company`, or
    spread over 50 companies)."""
    minutes = (generated - BASE_TIME).total_seconds() / 60
    found = []
    for i in range(count):
        connection_id = f"{prefix}-{uuid.uuid4().hex}"
        body = connection_event(minutes=minutes, connection_id=connection_id, company_id=company or f"co-{i % 50}")
        raw, headers = signed_request(body)
        found.append((headers["webhook-id"], raw_request("127.0.0.1", "/webhooks/codat", headers, raw)))
    return found


def backfill_depth(target: Stack) -> int:
    items = httpx.get(f"{target.base}/v1/admin/queues", headers=AUTH, timeout=10).json()["items"]
    return sum(int(item["depth"]) for item in items if item["queue"] == "backfill")


async def live_run(target: Stack, rate: float, until: asyncio.Event | None, seconds: float) -> list[float]:
    """Live webhooks at `rate` for `seconds` (or until `until` is set); each one's POST-due → SSE latency (ms), read
    by a client of the live company's stream (as a customer's dashboard is)."""
    sse = await SseReader.open(target.port, f"/v1/stream?company_id={LIVE_COMPANY}")
    send = await post_sender(target.port)
    arrivals: dict[str, float] = {}
    due: dict[str, float] = {}

    async def read() -> None:
        async for frame in sse.frames():
            data = field(frame, b"data")
            at = data.find(b'"event_id":"')
            if at >= 0:
                message_id = data[at + 12 : data.find(b'"', at + 12)].decode()
                if message_id in due and message_id not in arrivals:
                    arrivals[message_id] = time.perf_counter()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)
    tasks = []
    start = time.perf_counter()
    i = 0
    while (until is None and time.perf_counter() - start < seconds) or (until is not None and not until.is_set()):
        (message_id, payload), *_ = signed(1, datetime.now(UTC), "live", LIVE_COMPANY)
        due[message_id] = start + i / rate
        wait = due[message_id] - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(send(payload)))
        i += 1
    await asyncio.gather(*tasks)
    deadline = time.perf_counter() + 30
    while len(arrivals) < len(due) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    reader.cancel()
    sse.close()
    return [(arrivals[m] - due[m]) * 1000 for m in arrivals] + [float("inf")] * (len(due) - len(arrivals))


async def post_backlog(target: Stack, backlog: list[tuple[str, bytes]], connections: int = 32) -> float:
    """Post every webhook of `backlog` over `connections` connections; seconds taken."""
    senders = [await post_sender(target.port) for _ in range(connections)]
    started = time.perf_counter()

    async def lane(k: int) -> None:
        for _, payload in backlog[k::connections]:
            await senders[k](payload)

    await asyncio.gather(*(lane(k) for k in range(connections)))
    return time.perf_counter() - started


async def measure(target: Stack, backlog_size: int, rate: float) -> None:
    await live_run(target, rate, None, 3)  # warm-up: connections, caches, the first companies
    baseline = await live_run(target, rate, None, 10)
    old = signed(backlog_size, datetime.now(UTC) - timedelta(hours=3), "old")
    drained = asyncio.Event()
    before = await asyncio.to_thread(scrape, target.port)
    live = asyncio.create_task(live_run(target, rate, drained, 0))
    started = time.perf_counter()
    posting = await post_backlog(target, old)
    depth = await asyncio.to_thread(backfill_depth, target)
    while await asyncio.to_thread(backfill_depth, target) > 0:
        await asyncio.sleep(0.5)
    drain = time.perf_counter() - started
    drained.set()
    during = await live
    stages = breakdown(before, await asyncio.to_thread(scrape, target.port))
    columns = [
        "run",
        "live events",
        "p50 ms",
        "p99 ms",
        "max ms",
        "backlog",
        "posted in",
        "backfill depth",
        "drained in",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for name, values, extra in (
        ("live alone (baseline)", baseline, "— | — | — | —"),
        ("live while the backlog drains", during, f"{backlog_size:,} | {posting:.1f} s | {depth:,} | {drain:.1f} s"),
    ):
        lost = sum(1 for v in values if v == float("inf"))
        found = [v for v in values if v != float("inf")]
        print(
            f"| {name} | {len(values):,} ({lost} lost) | {percentile(found, 50):.1f} | {percentile(found, 99):.1f} "
            f"| {max(found, default=float('nan')):.1f} | {extra} |"
        )
    print(f"stages while draining (live and backlog events alike): {stages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=30_000)
    parser.add_argument("--live-rate", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}; load average {os.getloadavg()[0]:.1f}")
    print(f"web: 1 process; workers: {args.workers} x {args.threads} threads; db: {args.database_url or 'SQLite'}")
    with stack(
        "live-backlog",
        workers=args.workers,
        threads=args.threads,
        database_url=args.database_url,
        SYNCTRACK_LIVE_WINDOW="10m",
    ) as target:
        asyncio.run(measure(target, args.backlog, args.live_rate))


if __name__ == "__main__":
    main()
