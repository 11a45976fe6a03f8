"""`ChangeStreamResponse`: one client's events written to its socket with the ASGI `send`, under any ASGI server.

The request's own task runs the event source and sends each chunk as it comes; one small task waits for
the client to leave (`receive` says ``http.disconnect``). Heartbeats, the send timeout and the shutdown are
the fan-out's single watchdog (`service/stream/fanout.py`), which this loop informs by noting when each send
starts and ends on the client's `Subscriber`. The headers are sse-starlette's (no caching, no proxy
buffering), and so is the HEAD answer (headers, no body).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncGenerator, Callable

from sse_starlette.sse import AppStatus
from starlette.types import Receive, Scope, Send

from service.stream.client import Subscriber

log = logging.getLogger("synctrack.stream")


def server_exiting() -> bool:
    """True once uvicorn was told to stop (SIGTERM/SIGINT); False under a server that does not say.

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
    """Sends each chunk of `content` as it comes; ends when the content ends, the client leaves, or the
    watchdog times out a send (a client that stopped reading). `release` runs as soon as the client is gone
    and again when the response is over; it must be idempotent.

    A plain ASGI response with slots: one exists per connected client for as long as it stays.
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
        self.sub.task = asyncio.current_task()
        listener = asyncio.create_task(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while await self._send_next(send):
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.sub.timed_out or task is None:
                raise
            task.uncancel()
            log.info("msg=stream_client_dropped reason=send_timeout")
        finally:
            listener.cancel()
            await self.content.aclose()
            self.release()

    async def _send_next(self, send: Send) -> bool:
        """Send the content's next chunk once it comes; False when the content is over. A chunk (the snapshot
        can be large) lives only as long as its send, not while the client waits for the next one."""
        chunk = await anext(self.content, None)
        if chunk is None:
            return False
        sub = self.sub
        sub.sending_since = asyncio.get_running_loop().time()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sub.last_sent, sub.sending_since = sub.sending_since, 0.0
        return True

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.release()
