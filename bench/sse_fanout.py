"""Fan-out: thousands of stream clients on one web process — memory per client, delivery latency.

    .venv/bin/python bench/sse_fanout.py [--clients 1000,5000] [--rate 5] [--seconds 10]

Needs the real Redis. One `synctrack web` process; N unfiltered clients connect from this process
(uvloop, raw sockets) and each reads its `snapshot`. Then `--rate` changes per second are XADDed onto
the change stream for `--seconds` (what the workers publish, ~450 bytes of data each, stamped with
their publish time) and every client records when each arrives. Reported: the web process's RSS per
connected client, and publish → arrival p50/p99/max over every (client, change) pair.

Baseline, same run: 1 client (latency) and 0 clients (RSS). Every `--probe-every`-th client parses and times each
change as it comes; the others let their socket buffers hold the changes and count them afterwards, so the
clients' own CPU stays small beside the server's (the server writes to every socket all the same).

The probes share the two cores with the server, so their own scheduling delay is inside the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_seconds, machine, rss_mib  # noqa: E402
from bench.sse_support import SseReader, Stack, field, percentile, raise_file_limit, stack  # noqa: E402
from tests.support.services import REDIS_URL  # noqa: E402
from workers.ledger.changes import stream_key  # noqa: E402

PADDING = "x" * 300


@dataclass
class Run:
    clients: int
    rss_idle_mib: float
    rss_connected_mib: float
    changes: int
    latencies_ms: list[float]
    """From the timing clients (every `--probe-every`-th)."""
    delivered: int
    connect_seconds: float
    server_cpu_share: float

    @property
    def per_client_kib(self) -> float:
        return (self.rss_connected_mib - self.rss_idle_mib) * 1024 / self.clients if self.clients else 0.0

    def row(self) -> str:
        expected = self.clients * self.changes
        lost = expected - self.delivered
        return (
            f"| {self.clients:,} | {self.rss_idle_mib:.0f} | {self.rss_connected_mib:.0f} | "
            f"{f'{self.per_client_kib:.1f}' if self.clients >= 100 else '–'} | "
            f"{self.connect_seconds:.1f} | {self.changes} | {percentile(self.latencies_ms, 50):.1f} | "
            f"{percentile(self.latencies_ms, 99):.1f} | {max(self.latencies_ms, default=float('nan')):.1f} | "
            f"{lost} | {self.server_cpu_share:.2f} |"
        )


MARK = b"event: sync.started"


async def probe(reader: SseReader, latencies: list[float], seen: list[int], ready: asyncio.Event) -> None:
    """A client that times every change: publish time (in the data) to arrival."""
    async for frame in reader.frames():
        if b"event: snapshot" in frame:
            ready.set()
            continue
        data = field(frame, b"data")
        at = data.find(b'"t":')
        if at >= 0:
            latencies.append((time.time() - float(data[at + 4 : data.find(b",", at)])) * 1000)
            seen[0] += 1


async def counter(reader: SseReader, seen: list[int], ready: asyncio.Event, published: asyncio.Event) -> None:
    """A client that reads nothing while changes are published (its socket buffer holds them), then
    counts them: the clients' own CPU stays out of the probes' way."""
    tail = b""
    while chunk := await reader.reader.read(1 << 16):
        if not ready.is_set() and b"event: snapshot" in tail + chunk:
            ready.set()
            await published.wait()
        # A match needs at least one new byte: the kept tail is shorter than the mark.
        seen[0] += (tail + chunk).count(MARK)
        tail = (tail + chunk)[-(len(MARK) - 1) :]


async def measure(target: Stack, clients: int, rate: float, seconds: float, probe_every: int) -> Run:
    await asyncio.sleep(1)
    rss_idle = rss_mib(target.web.pids)
    latencies: list[float] = []
    seen = [0]
    readers: list[SseReader] = []
    tasks = []
    gate = asyncio.Semaphore(100)
    published = asyncio.Event()
    started = time.perf_counter()

    async def connect(i: int) -> None:
        async with gate:
            reader = await SseReader.open(target.port)
            ready = asyncio.Event()
            readers.append(reader)
            timed = i % probe_every == 0
            work = probe(reader, latencies, seen, ready) if timed else counter(reader, seen, ready, published)
            tasks.append(asyncio.create_task(work))
            await asyncio.wait_for(ready.wait(), 60)

    await asyncio.gather(*(connect(i) for i in range(clients)))
    connect_seconds = time.perf_counter() - started
    await asyncio.sleep(2)
    rss_connected = rss_mib(target.web.pids)

    publisher = redis.asyncio.Redis.from_url(REDIS_URL)
    count = int(rate * seconds)
    cpu_before, wall_before = cpu_seconds(target.web.pids), time.perf_counter()
    start = time.perf_counter() + 0.05
    for i in range(count):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        data = json.dumps(
            {"t": time.time(), "id": f"sync-{i}", "event_id": f"evt-{i}", "padding": PADDING}, separators=(",", ":")
        )
        fields = {"event": "sync.started", "company_id": "co", "connection_id": "conn", "data": data}
        await publisher.xadd(stream_key(target.namespace), fields)  # type: ignore[arg-type]
    await asyncio.sleep(1)  # the probes see the last changes; what arrived later would not be timed anyway
    server_cpu = (cpu_seconds(target.web.pids) - cpu_before) / (time.perf_counter() - wall_before)
    published.set()
    deadline = time.monotonic() + 60
    while seen[0] < clients * count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for reader in readers:
        reader.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await publisher.aclose()
    return Run(clients, rss_idle, rss_connected, count, latencies, seen[0], connect_seconds, server_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1000,5000")
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--probe-every", type=int, default=20, help="every N-th client times each change")
    args = parser.parse_args()
    limit = raise_file_limit()
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, Run]], Run] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run

    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}; load average {os.getloadavg()[0]:.1f}; fds {limit}")
    print(
        f"changes: {args.rate:g}/s for {args.seconds:g} s to every client; every {args.probe_every}th client times "
        "them, the others count them"
    )
    print(
        "| clients | RSS idle MiB | RSS connected MiB | KiB per client | connect s | changes | p50 ms | p99 ms | "
        "max ms | lost | server CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for clients in [1, *(int(c) for c in args.clients.split(","))]:
        # A fresh process per size, so one size's memory does not flatter the next.
        with stack(f"sse-fanout-{clients}", SYNCTRACK_STREAM_HEARTBEAT_SECONDS="15") as target:
            run = runner(measure(target, clients, args.rate, args.seconds, args.probe_every))
            print(run.row(), flush=True)
            deadline = time.monotonic() + 10
            while (left := target.status()["clients"]) and time.monotonic() < deadline:
                time.sleep(0.2)
            if left:
                print(f"  note: {left} clients still registered 10 s after disconnecting", flush=True)


if __name__ == "__main__":
    main()
