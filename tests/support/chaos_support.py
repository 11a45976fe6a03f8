"""Tools of the fault-injection run: a private Redis that can be crashed and restarted, and a sender that
behaves like Codat (retries anything but a 2xx) while recording every answer it got.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.support.workload import Delivery, signed

RETRY_PAUSE_SECONDS = 0.2
"""Codat waits 5 s and more between attempts; the run compresses that to keep its duration small."""


class RedisServer:
    """A `redis-server` on its own port with the AOF fsynced on every write (`appendfsync always`):
    what was acknowledged before a crash is there after the restart."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.directory = port, directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--maxmemory-policy", "noeviction"]
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def crash(self) -> None:
        """SIGKILL: no shutdown hook, no final fsync."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Web:
    base: str
    accepting: bool = True
    """False from the moment it is told to stop: like a load balancer, the sender routes elsewhere."""


@dataclass
class Attempt:
    message_id: str
    web: str
    at: float
    """When the attempt ended (answer or error), on the monotonic clock."""
    status: int | None
    """None: no HTTP answer (connection refused, reset or closed)."""
    error: str = ""
    retry_after: str | None = None
    code: str | None = None
    refused: bool = False
    """The connection was refused: the request never reached a server."""


@dataclass
class Ledger:
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: int = 0

    def statuses(self) -> Counter[int | None]:
        return Counter(a.status for a in self.attempts)

    def ids_with(self, status: int) -> set[str]:
        return {a.message_id for a in self.attempts if a.status == status}


async def send_like_codat(
    deliveries: list[Delivery], webs: list[Web], record: Ledger, concurrency: int = 32, deadline_s: float = 300
) -> None:
    """Deliver each message until it gets a 2xx, round-robin over the webs that are accepting."""
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for delivery in deliveries:
        queue.put_nowait(delivery)
    turn = 0
    stop_at = time.monotonic() + deadline_s

    async def deliver(client: httpx.AsyncClient, delivery: Delivery) -> None:
        nonlocal turn
        while time.monotonic() < stop_at:
            candidates = [w for w in webs if w.accepting]
            if not candidates:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            turn += 1
            web = candidates[turn % len(candidates)]
            try:
                response = await client.post(
                    f"{web.base}/webhooks/codat", content=delivery.body, headers=signed(delivery)
                )
            except httpx.ConnectError as exc:
                record.attempts.append(
                    Attempt(delivery.message_id, web.base, time.monotonic(), None, repr(exc), refused=True)
                )
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            except httpx.TransportError as exc:
                record.attempts.append(Attempt(delivery.message_id, web.base, time.monotonic(), None, repr(exc)))
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            code = response.json().get("error") if response.status_code >= 400 else None
            record.attempts.append(
                Attempt(
                    delivery.message_id,
                    web.base,
                    time.monotonic(),
                    response.status_code,
                    retry_after=response.headers.get("retry-after"),
                    code=code,
                )
            )
            if 200 <= response.status_code < 300:
                record.acknowledged += 1
                return
            await asyncio.sleep(RETRY_PAUSE_SECONDS)

    async def lane() -> None:
        limits = httpx.Limits(max_keepalive_connections=4, max_connections=4)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            while not queue.empty():
                await deliver(client, queue.get_nowait())

    await asyncio.gather(*(lane() for _ in range(concurrency)))
