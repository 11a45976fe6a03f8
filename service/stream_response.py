"""How one client's events reach its socket: an sse-starlette `EventSourceResponse` with a lean body loop.

sse-starlette's own loop runs a task group of four tasks per client (sender, ping, shutdown listener,
disconnect listener): measured with bench/sse_fanout.py that is ~47 KiB of RSS per connected client,
against ~25 KiB for this loop. Here one small task waits for the disconnect; heartbeats are written by
the event source itself (`service/stream.py`); one watcher per process (`Fanout`, with
`server_exiting`) ends every stream when the server starts to stop, so a graceful shutdown does not
wait on clients that never leave. The response keeps sse-starlette's headers (no caching, no proxy
buffering) and its HEAD answer (headers, no body).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncGenerator, Callable
from typing import Any

from sse_starlette.sse import AppStatus, EventSourceResponse
from starlette.types import Receive, Scope, Send

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


class ChangeStreamResponse(EventSourceResponse):
    """Sends each chunk of `content` as it comes; ends when the content ends, the client leaves, or a
    send waits longer than `send_timeout` (a client that stopped reading). `release` runs exactly
    when the client is gone or the response is over, whichever comes first, and may run twice."""

    def __init__(
        self, content: AsyncGenerator[bytes, None], *, release: Callable[[], None], send_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(content, ping=0, sep="\n", send_timeout=send_timeout, **kwargs)
        self.release = release
        self.content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.content.aclose()
                self.release()
            return
        listener = asyncio.create_task(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.content:
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("msg=stream_client_dropped reason=send_timeout seconds=%s", self.send_timeout)
        finally:
            listener.cancel()
            await self.content.aclose()
            self.release()

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.release()
