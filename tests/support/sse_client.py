"""A real streaming SSE client for tests: httpx on a reader thread, events handed over in a queue.

In-process ASGI test clients wait for the end of a response, which an event stream never has; this
reads a real socket of a real server process instead.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.auth import ADMIN_HEADERS


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseClient:
    """Connects on construction; `close()` disconnects. `comments` counts heartbeat comment lines."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    """Event names this client drops as they arrive (a test about other events leaves them out)."""
    status: int | None = None
    comments: int = 0
    ended: bool = False

    def __post_init__(self) -> None:
        self._events: queue.Queue[SseEvent] = queue.Queue()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=30.0))
        self._response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._opened.wait(10):
            raise TimeoutError(f"no response from {self.url}")
        if self.error is not None:
            raise self.error

    def _read(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self._response = response
                self.status = response.status_code
                self._opened.set()
                fields: dict[str, str] = {}
                data: list[str] = []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if (data or fields.get("event")) and fields.get("event") not in self.ignore:
                            self._events.put(
                                SseEvent(fields.get("id"), fields.get("event", "message"), "\n".join(data))
                            )
                        fields, data = {}, []
                    elif line.startswith(":"):
                        self.comments += 1
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        else:
                            fields[name] = value
                self.ended = True
        except BaseException as exc:  # reported to the test through `error`
            if not self._stop.is_set():
                self.error = exc
        finally:
            self._opened.set()

    def next(self, timeout: float = 10) -> SseEvent:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout}s (error: {self.error!r}, ended: {self.ended})") from None

    def take(self, count: int, timeout: float = 15) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        return [self.next(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    def drain(self, quiet: float = 0.5) -> list[SseEvent]:
        """Every event that arrives until none has for `quiet` seconds."""
        events = []
        while True:
            try:
                events.append(self._events.get(timeout=quiet))
            except queue.Empty:
                return events

    def close(self) -> None:
        """Disconnect now: shutting the socket down wakes the reader thread and tells the server."""
        self._stop.set()
        if self._response is not None:
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(5)

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_status(base: str) -> dict[str, Any]:
    """`GET /v1/stream/status` of the web process at `base`, as the admin."""
    body: dict[str, Any] = httpx.get(f"{base}/v1/stream/status", headers=ADMIN_HEADERS, timeout=5).json()
    return body
