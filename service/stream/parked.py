"""A live stream client with no request left: its connection belongs to the fan-out until the client goes.

A client that has its opening (snapshot, catch-up or reset) and nothing buffered would otherwise keep a
request open for hours: a task, its coroutines, the ASGI scope and the server's whole per-connection state,
~10 KiB each (`bench/sse_fanout.py`). `park` hands the connection to a `ParkedStream` instead (the server's
`BodyWriter.park`, `service/stream/protocol.py`), and the request ends with its response still open.
What is left per client is the socket's transport, this protocol and the `Subscriber`.

A `ParkedStream` does synchronously what the client's task did when woken (`routes.events`), with the
same results on the wire:
- the fan-out writes each change straight to the socket (`Subscriber.write_now`), heartbeats too;
- when the socket falls behind, the transport says so (`pause_writing`); changes then wait in the
  subscriber's bounded buffer and go out in one write when it catches up (`resume_writing`); a buffer
  overflow is a ``reset``, as ever; a socket paused longer than the send timeout is dropped by the
  fan-out's watchdog (`Subscriber.time_out`);
- a ``reset`` (slow client, interrupted feed) ends the body and closes the connection; so does the server
  stopping (the fan-out closes every subscriber).
"""

from __future__ import annotations

import asyncio
import logging

from service.stream.client import HEARTBEAT, Subscriber, unsent
from service.stream.fanout import Fanout
from service.stream.frames import reset_frame
from service.stream.protocol import LAST_CHUNK, BodyWriter, chunk

log = logging.getLogger("synctrack.stream")


class ParkedStream(asyncio.Protocol):
    """The connection of one parked client: the `Writer` the fan-out writes through, and the transport's protocol."""

    __slots__ = ("sub", "fanout", "transport", "paused", "ended")

    def __init__(self, sub: Subscriber, fanout: Fanout) -> None:
        self.sub, self.fanout = sub, fanout
        self.transport: asyncio.Transport | None = None
        self.paused = False
        """The transport's buffer is over its high-water mark: nothing is written until it drains."""
        self.ended = False
        """The body's last chunk was written (or the connection dropped): nothing more is."""

    def write(self, framed: bytes) -> bool:
        """Write one framed chunk now; False where the client's task would have waited (socket behind) or
        the connection is ending. Never raises."""
        transport = self.transport
        if self.paused or self.ended or transport is None or transport.is_closing():
            return False
        try:
            transport.write(framed)
        except RuntimeError:  # closed since (uvloop); `connection_lost` follows
            return False
        return True

    def wake(self) -> None:
        """What the client's task does when woken: say goodbye if the client must reset or the stream is
        over; else, unless the socket is behind, write everything buffered (or a due heartbeat) in one write."""
        sub = self.sub
        if self.ended:
            return
        if sub.lost or sub.closed:
            self.end(reset_frame(self.fanout.position or "0-0", sub.lost) if sub.lost else b"")
            return
        if self.paused:
            return
        body, sub.skip_through = unsent(sub.take_buffered(), sub.skip_through)
        if sub.take_heartbeat() and not body:
            body = HEARTBEAT
        if body and self.write(chunk(body)):
            sub.last_sent = asyncio.get_running_loop().time()
        sub.direct = not (self.paused or self.ended)

    def end(self, last: bytes) -> None:
        """Write `last` (if any) and the body's end, then close: at once if the client had stopped reading
        and was let go, else once the transport has written what it holds."""
        self.ended, self.sub.direct = True, False
        transport = self.transport
        if transport is None:
            return
        try:
            transport.write(chunk(last) + LAST_CHUNK if last else LAST_CHUNK)
        except RuntimeError:
            pass
        if self.paused and self.sub.closed:
            transport.abort()
        else:
            transport.close()

    def abort(self) -> None:
        """The watchdog's send timeout: the client stopped reading."""
        log.info("msg=stream_client_dropped reason=send_timeout")
        self.ended, self.sub.direct = True, False
        if self.transport is not None:
            self.transport.abort()

    # The transport's calls.

    def pause_writing(self) -> None:
        self.paused, self.sub.direct = True, False
        self.sub.sending_since = asyncio.get_running_loop().time()

    def resume_writing(self) -> None:
        self.paused = False
        self.sub.sending_since = 0.0
        self.wake()

    def data_received(self, data: bytes) -> None:
        """Nothing a client sends after its stream request can be answered: it is read and let go."""

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended, self.transport = True, None
        self.fanout.unsubscribe(self.sub)


def park(fanout: Fanout, sub: Subscriber) -> bool:
    """Park the client's connection where the server allows it (its `BodyWriter`) and the client is idle: True,
    and the request must then end without finishing its response; False, and the client's task goes on."""
    writer = sub.writer
    if not isinstance(writer, BodyWriter) or not sub.idle:
        return False
    stream = ParkedStream(sub, fanout)
    transport = writer.park(stream)
    if transport is None:
        return False
    stream.transport = transport
    sub.writer = sub.parked = stream
    sub.task = None
    sub.direct = True
    return True
