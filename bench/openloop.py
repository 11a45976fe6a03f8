"""An open-loop load generator: requests leave on a fixed schedule whatever the server does.

wrk (closed loop) waits for an answer before the next request on a connection, so a slow server
lowers the offered rate and hides its own queueing ("coordinated omission"). Here request i is due at
``start + i / rate``; its latency runs from that due time, not from when a connection became free,
and a new connection is opened whenever none is idle. Raw HTTP/1.1 over asyncio streams (uvloop when
available) keeps the generator's own cost to a few tens of microseconds per request.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FixedRateResult:
    rate: float
    sent: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    connections: int = 0
    late_sends: int = 0
    """Requests the generator itself sent more than 1 ms after their due time (its own lag)."""

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def raw_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def fixed_rate(host: str, port: int, requests: list[bytes], rate: float) -> FixedRateResult:
    """Send every request in `requests` at `rate` per second; return latencies and status counts."""
    result = FixedRateResult(rate=rate, sent=len(requests), duration_s=0.0)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def one(payload: bytes, due: float) -> None:
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, port)
            result.connections += 1
        try:
            writer.write(payload)
            status = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            writer.close()
            return
        result.latencies_ms.append((time.perf_counter() - due) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        idle.append((reader, writer))

    tasks = []
    # perf_counter, not loop.time(): uvloop's clock has millisecond resolution.
    start = time.perf_counter() + 0.05
    for i, payload in enumerate(requests):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.001:
            result.late_sends += 1
        tasks.append(asyncio.ensure_future(one(payload, due)))
    await asyncio.gather(*tasks)
    result.duration_s = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    return result


def run_fixed_rate(host: str, port: int, requests: list[bytes], rate: float) -> FixedRateResult:
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop_factory = None
    # A full collection over the caller's heap would stall the schedule for tens of milliseconds and be
    # charged to the server; freeze what exists and collect nothing while sending.
    gc.collect()
    gc.freeze()
    gc.disable()
    started = time.perf_counter()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(fixed_rate(host, port, requests, rate))
    finally:
        gc.enable()
        gc.unfreeze()
    result.duration_s = result.duration_s or time.perf_counter() - started
    return result
