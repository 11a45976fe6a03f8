"""The web server's HTTP protocol: uvicorn's httptools protocol plus one ASGI extension, a synchronous body writer.

An ASGI app writes only by awaiting `send`, so one change for 5,000 stream clients meant 5,000 task
wake-ups, each walking the client's generator and response loop to write the same shared frame. With
`BodyWriter` the fan-out writes that frame to every socket itself, in one loop, and a client's task
stays asleep (`bench/sse_fanout.py`). The writer also says when the connection is lost, so no task has to
wait on `receive` just to learn that.

The writer only ever writes where `send` would have written the same bytes at once: the response has
started, is chunked and not complete, the client is connected, and uvicorn's flow control has not paused
writing. Anywhere else `write` answers False and the caller awaits `send` as before (and so waits for a
client that reads slowly). Under any other server, or uvicorn's h11 protocol, the extension is absent and
the stream works the plain ASGI way.

This module is the one place that reads uvicorn's per-request state (`RequestResponseCycle`); the
attributes it reads are checked against the installed uvicorn when the module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

BODY_WRITER = "synctrack.body_writer"
"""The key of the extension in ``scope["extensions"]``; its value is a `BodyWriter`."""
PROTOCOL = f"{__name__}:StreamingHttpProtocol"
"""What `synctrack web` and `synctrack dev` give uvicorn as `http=`."""

_CYCLE_STATE = ("transport", "flow", "disconnected", "response_started", "response_complete", "chunked_encoding")


def chunk(body: bytes) -> bytes:
    """`body` framed as one HTTP/1.1 chunk, as uvicorn's `send` frames it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class BodyWriter:
    """Writes body chunks of one response without awaiting; `on_lost` runs once the client is gone."""

    __slots__ = ("_cycle", "on_lost")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self.on_lost: Callable[[], None] | None = None

    def write(self, framed: bytes) -> bool:
        """Write `framed` (a body already framed by `chunk`) now; False when `send` must be awaited instead:
        the response is not under way, not chunked, complete, the client is gone or going, or its socket is
        behind. Never raises: the fan-out writes to thousands of clients in one loop."""
        cycle = self._cycle
        if (
            cycle.disconnected
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        ):
            return False
        try:
            cycle.transport.write(framed)
        except RuntimeError:  # closed since (uvloop); the caller must not fail for it, `on_lost` follows
            return False
        return True


class StreamingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; every GET request's scope carries a `BodyWriter`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle: RequestResponseCycle | None = self.cycle
        # A new cycle exists unless the request is an upgrade; the stream is a GET, the hot POSTs get nothing.
        if cycle is not None and cycle.scope is self.scope and self.scope.get("method") == "GET":
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[BODY_WRITER] = BodyWriter(cycle)

    def connection_lost(self, exc: Exception | None) -> None:
        cycle: RequestResponseCycle | None = self.cycle
        super().connection_lost(exc)
        writer = body_writer(cycle.scope) if cycle is not None else None
        if writer is not None and writer.on_lost is not None:
            lost, writer.on_lost = writer.on_lost, None
            lost()


def body_writer(scope: Any) -> BodyWriter | None:
    """The request's `BodyWriter`, when the server is this protocol."""
    extensions = scope.get("extensions")
    writer: BodyWriter | None = extensions.get(BODY_WRITER) if extensions else None
    return writer


def _check_uvicorn() -> None:
    """Fail at import, not at the first stream, if uvicorn's per-request state is no longer what the writer reads."""
    missing = [name for name in _CYCLE_STATE if name not in RequestResponseCycle.__init__.__code__.co_names]
    missing += [] if "write_paused" in FlowControl.__init__.__code__.co_names else ["flow.write_paused"]
    if missing:
        raise ImportError(f"uvicorn no longer sets {missing}; service/stream/protocol.py needs a look")


_check_uvicorn()
