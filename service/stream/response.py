"""How one client's events reach its socket: a lean response with sse-starlette's headers and one small task.

sse-starlette's own loop runs a task group of four tasks per client (sender, ping, shutdown listener,
disconnect listener) and a timer per send: measured with bench/sse_fanout.py that is ~47 KiB of RSS per
connected client, and its timers were a fifth of the CPU spent per delivered change. Here the request's
own task is the only one: the server's `BodyWriter` (`service/stream/protocol.py`) says when the client
leaves (under a server without it, one small task waits for the disconnect), and while the client keeps
up the fan-out writes to its socket without waking this loop at all; once the client is live and idle,
the event source parks the connection (`service/stream/parked.py`) and this loop ends without ending the
body. Heartbeats, the send timeout and the shutdown are the fan-out's single watchdog
(`service/stream/fanout.py`), which this loop informs by noting when each send starts and ends on the
client's `Subscriber`. The response keeps sse-starlette's headers (no
caching, no proxy buffering) and its HEAD answer (headers, no body).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncGenerator, Callable

from sse_starlette.sse import AppStatus
from starlette.types import Receive, Scope, Send

from service.stream.client import Subscriber
from service.stream.protocol import body_writer

log = logging.getLogger("synctrack.stream")


def server_exiting() -> bool:
    """True once uvicorn was told to stop (SIGTERM/SIGINT).

    sse-starlette patches uvicorn's exit handler to set `AppStatus.should_exit`, but uvicorn binds its
    signal handlers before it imports the app, so the patch can come too late; the handler itself, a
    bound method of the running server, tells the rest (the same look sse-starlette takes)."""
    if AppStatus.should_exit:
        return True
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


HEADERS = [
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
"""sse-starlette's headers: no caching, no proxy buffering. One list shared by every response."""


class ChangeStreamResponse:
    """Sends each chunk of `content` as it comes; ends when the content ends, the client leaves, or
    the watchdog times out a send (a client that stopped reading). `release` runs as soon as the
    client is gone and again when the response is over; it must be idempotent.

    A plain ASGI response with slots rather than sse-starlette's `EventSourceResponse`: one exists per
    connected client for as long as it stays, and the stock one carries a lock, header objects and
    options this loop never uses (~1.5 KB each). HEAD is answered as sse-starlette does: the headers,
    an empty body, and the stream never opened.
    """

    __slots__ = ("content", "sub", "release")
    status_code = 200
    raw_headers = HEADERS

    def __init__(self, content: AsyncGenerator[bytes, None], *, sub: Subscriber, release: Callable[[], None]) -> None:
        self.content, self.sub, self.release = content, sub, release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            try:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                await self.content.aclose()
                self.release()
            return
        sub, loop = self.sub, asyncio.get_running_loop()
        sub.task = asyncio.current_task()
        # The server's writer also says when the client leaves; without one, a task listens for it.
        sub.writer = body_writer(scope)
        listener: asyncio.Task[None] | None = None
        if sub.writer is not None:
            sub.writer.on_lost = self.release
        else:
            listener = asyncio.create_task(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.content:
                sub.sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sub.last_sent, sub.sending_since = sub.sending_since, 0.0
                # Not kept while the next one is awaited: the snapshot can be large, and while the fan-out
                # writes to this client itself the next chunk may not come for hours.
                del chunk
            if sub.parked is None:  # a parked connection's body is ended by the fan-out, later
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not sub.timed_out:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            log.info("msg=stream_client_dropped reason=send_timeout")
        finally:
            if listener is not None:
                listener.cancel()
            elif sub.parked is None:
                sub.writer = None
            await self.content.aclose()
            if sub.parked is None:
                self.release()

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.release()
