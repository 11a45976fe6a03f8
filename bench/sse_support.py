"""What the stream benchmarks share: a `synctrack web` (+ workers) on the real Redis, a raw SSE reader,
and percentiles.

The reader is raw HTTP/1.0 over asyncio streams (no chunked framing, the server closes at the end) so
that thousands of clients fit in one process and a delivery costs the client a `find`, not a parser.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import OUT, Server, running  # noqa: E402
from service.security.tokens import hash_token, new_admin_token  # noqa: E402
from tests.support.builders import SECRET  # noqa: E402
from tests.support.services import REDIS_URL, free_port  # noqa: E402

TOKEN = new_admin_token()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def raise_file_limit() -> int:
    """Allow as many sockets as the hard limit does (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@dataclass
class Stack:
    base: str
    port: int
    namespace: str
    web: Server
    worker: Server | None
    redis: redis.Redis

    @property
    def pids(self) -> list[int]:
        """Every process of the service (web, worker main and children)."""
        return self.web.pids + (self.worker.pids if self.worker else [])

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/v1/stream/status", headers=AUTH, timeout=10).json()
        return body


@contextmanager
def stack(
    name: str, workers: int = 0, threads: int = 4, database_url: str | None = None, **env: str
) -> Iterator[Stack]:
    """One `synctrack web` process, `workers` worker processes; a fresh namespace, cleaned afterwards."""
    OUT.mkdir(parents=True, exist_ok=True)
    namespace = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    db = OUT / f"{namespace}.db"
    full_env = {
        "SYNCTRACK_DATABASE_URL": database_url or f"sqlite:///{db}",
        "SYNCTRACK_REDIS_URL": REDIS_URL,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_LIVE_WINDOW": "0",  # the workload is dated weeks ago: these runs measure the live lane
        "SYNCTRACK_ADMIN_TOKEN_HASHES": hash_token(TOKEN),
        "SYNCTRACK_LOG_LEVEL": "WARNING",
        **env,
    }
    cli = [sys.executable, "-m", "service.cli"]
    upgrade_env = {**os.environ, **full_env, "PYTHONPATH": str(ROOT)}
    subprocess.run([*cli, "db", "upgrade"], env=upgrade_env, cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    client = redis.Redis.from_url(REDIS_URL)
    with ExitStack() as stack:
        web = stack.enter_context(
            running(
                f"{name}-web", ["-m", "service.cli", "web", "--host", "127.0.0.1", "--port", str(port)], full_env, port
            )
        )
        worker = None
        if workers:
            argv = ["-m", "service.cli", "worker", "--processes", str(workers), "--threads", str(threads)]
            worker = stack.enter_context(running(f"{name}-worker", argv, full_env))
        try:
            yield Stack(f"http://127.0.0.1:{port}", port, namespace, web, worker, client)
        finally:
            keys = list(client.scan_iter(f"{namespace}:*"))
            if keys:
                client.delete(*keys)
            db.unlink(missing_ok=True)


class SseReader:
    """One raw event-stream connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str = "/v1/stream", headers: dict[str, str] | None = None) -> SseReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        lines = [f"GET {path} HTTP/1.0", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in {**AUTH, **(headers or {})}.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
            raise RuntimeError(f"stream refused: {head[:200]!r}")
        return cls(reader, writer)

    async def frames(self) -> AsyncIterator[bytes]:
        """Each SSE frame (``id``/``event``/``data`` lines) as it arrives; comments are skipped."""
        buffer = b""
        while True:
            chunk = await self.reader.read(1 << 16)
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            for frame in complete:
                if not frame.startswith(b":"):
                    yield frame

    def close(self) -> None:
        self.writer.close()


def field(frame: bytes, name: bytes) -> bytes:
    start = frame.find(b"\n" + name + b": ")
    if start < 0:
        if frame.startswith(name + b": "):
            start = -1
        else:
            return b""
    start += len(name) + 3
    end = frame.find(b"\n", start)
    return frame[start : end if end >= 0 else None]
