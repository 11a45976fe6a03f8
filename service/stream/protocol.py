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

Once a stream is live, the writer can also `park` its connection: the connection is handed to a protocol
of the stream's own (`service/stream/parked.py`) and uvicorn forgets the request, so the request's task,
its coroutines, the scope and uvicorn's per-connection state (parser, cycle, flow control, three
`deque`s) are freed, about four fifths of what an idle stream client cost (`bench/sse_fanout.py`).

This module is the one place that reads uvicorn's per-request state (`RequestResponseCycle`,
`HttpToolsProtocol`); the attributes it reads are checked against the installed uvicorn when the module
is imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

BODY_WRITER = "synctrack.body_writer"
"""The key of the extension in ``scope["extensions"]``; its value is a `BodyWriter`."""
PROTOCOL = f"{__name__}:StreamingHttpProtocol"
"""What `synctrack web` and `synctrack dev` give uvicorn as `http=`."""

_CYCLE_STATE = ("transport", "flow", "disconnected", "response_started", "response_complete", "chunked_encoding")
_PROTOCOL_STATE = ("cycle", "pipeline", "connections")


LAST_CHUNK = b"0\r\n\r\n"
"""The end of a chunked body."""


def chunk(body: bytes) -> bytes:
    """`body` framed as one HTTP/1.1 chunk, as uvicorn's `send` frames it."""
    return b"%x\r\n%b\r\n" % (len(body), body)


class BodyWriter:
    """Writes body chunks of one response without awaiting; `on_lost` runs once the client is gone."""

    __slots__ = ("_cycle", "_http", "on_lost")

    def __init__(self, cycle: RequestResponseCycle, http: HttpToolsProtocol) -> None:
        self._cycle = cycle
        self._http = http
        self.on_lost: Callable[[], None] | None = None

    def _writable(self) -> bool:
        cycle = self._cycle
        return not (
            cycle.disconnected
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        )

    def write(self, framed: bytes) -> bool:
        """Write `framed` (a body already framed by `chunk`) now; False when `send` must be awaited instead:
        the response is not under way, not chunked, complete, the client is gone or going, or its socket is
        behind. Never raises: the fan-out writes to thousands of clients in one loop."""
        if not self._writable():
            return False
        try:
            self._cycle.transport.write(framed)
        except RuntimeError:  # closed since (uvloop); the caller must not fail for it, `on_lost` follows
            return False
        return True

    def park(self, successor: asyncio.Protocol) -> asyncio.Transport | None:
        """Hand the connection to `successor` for the rest of the response, and return its transport.

        uvicorn then forgets the request: the cycle counts as complete (the ASGI call may return without
        another `send`, and uvicorn neither answers nor closes), and the connection leaves the server's
        registry, so a graceful shutdown no longer waits on it (the successor's owner closes it). From here
        on the successor gets the transport's calls: `pause_writing`, `resume_writing`, `connection_lost`.
        The successor writes the rest of the chunked body itself, ending it with `LAST_CHUNK`.

        None, and nothing changed, unless a write could happen now and the connection has nothing
        else for uvicorn: no later request queued behind this one, reading not paused."""
        cycle, http = self._cycle, self._http
        if not self._writable() or http.cycle is not cycle or http.pipeline or cycle.flow.read_paused:
            return None
        transport = cycle.transport
        cycle.response_complete = True
        http.connections.discard(http)
        transport.set_protocol(successor)
        self.on_lost = None
        return transport


class StreamingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; every GET request's scope carries a `BodyWriter`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle: RequestResponseCycle | None = self.cycle
        # A new cycle exists unless the request is an upgrade; the stream is a GET, the hot POSTs get nothing.
        if cycle is not None and cycle.scope is self.scope and self.scope.get("method") == "GET":
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[BODY_WRITER] = BodyWriter(cycle, self)

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
    missing += [name for name in _PROTOCOL_STATE if name not in HttpToolsProtocol.__init__.__code__.co_names]
    missing += [name for name in ("write_paused", "read_paused") if name not in FlowControl.__init__.__code__.co_names]
    if missing:
        raise ImportError(f"uvicorn no longer sets {missing}; service/stream/protocol.py needs a look")


_check_uvicorn()
