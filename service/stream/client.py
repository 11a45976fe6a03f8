"""One connected stream client, as the fan-out sees it: what it wants, what it is owed, whether it keeps up.

A `StreamChange` is one entry of the change feed with its SSE frame encoded once and shared by every
client; a `Subscriber` is one client's bounded buffer of them. Both exist in the thousands per
process, so they are kept small (slots, a plain list, a future only while waiting).

While a client keeps up and its task waits for news, the fan-out writes each change straight to its
socket (`Subscriber.write_now`, through the server's `BodyWriter`); the buffer and the task take over
as soon as a write cannot happen at once, and hand back once the buffer is empty again. A parked client
(`service/stream/parked.py`) has no task: its connection does at once what the task would do when woken.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from service.stream.protocol import chunk

STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

SLOW_CLIENT = "slow_client"
"""The client fell further behind than its buffer holds."""
STREAM_INTERRUPTED = "stream_interrupted"
"""The reader lost its place in the stream (Redis trimmed or lost it while unreachable)."""
TOKEN_REVOKED = "token_revoked"
"""The company token the stream was opened with has been revoked: the stream ends."""
TOKEN_EXPIRED = "token_expired"
"""The company token the stream was opened with has expired: the stream ends."""


ANY: frozenset[str] = frozenset()

HEARTBEAT = b": heartbeat\n\n"
"""A comment line: keeps proxies from closing an idle stream; EventSource ignores it."""
HEARTBEAT_CHUNK = chunk(HEARTBEAT)


def parse_id(text: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a sortable pair; the caller has checked `STREAM_ID`."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True)
class StreamChange:
    """One change of the feed, with its SSE frame (``id``, ``event``, ``data``) ready to send, as is and as
    one HTTP chunk (what a `BodyWriter` writes)."""

    id: str
    key: tuple[int, int]
    company_id: str
    connection_id: str
    frame: bytes
    chunked: bytes

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> StreamChange | None:
        """Build from a stream entry; None for an entry without the feed's fields."""
        ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        name, data = raw.get("event"), raw.get("data")
        if name is None or data is None:
            return None
        values = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in raw.items() if k != "data"}
        body = data if isinstance(data, bytes) else str(data).encode()
        frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (ident.encode(), values["event"].encode(), body)
        company_id, connection_id = values.get("company_id", ""), values.get("connection_id", "")
        return cls(ident, parse_id(ident), company_id, connection_id, frame, chunk(frame))


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which changes a client wants; an empty set means "any". Both given: both must match."""

    company_ids: frozenset[str] = frozenset()
    connection_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, company_ids: list[str], connection_ids: list[str]) -> StreamFilter:
        """From the query's lists; "any" is one shared empty set, not a new one per client."""
        return cls(frozenset(company_ids) if company_ids else ANY, frozenset(connection_ids) if connection_ids else ANY)

    def matches(self, company_id: str, connection_id: str) -> bool:
        return (not self.company_ids or company_id in self.company_ids) and (
            not self.connection_ids or connection_id in self.connection_ids
        )


class Writer(Protocol):
    """Writes one framed chunk to a client's socket now, or answers False (`service/stream/protocol.py`)."""

    def write(self, framed: bytes) -> bool: ...


class Parked(Writer, Protocol):
    """A client's connection once its request task has ended (`service/stream/parked.py`)."""

    def wake(self) -> None:
        """Do at once what the client's task would do on waking: write what is buffered, or say goodbye."""

    def abort(self) -> None:
        """Drop the connection: a write has waited too long."""


def unsent(changes: list[StreamChange], last: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
    """The frames of `changes` after the id `last`, in one chunk (the shared frame when there is one), and
    the id of the last of them; a change at or before `last` was sent already (catch-up and buffer overlap)."""
    frames = []
    for change in changes:
        if change.key > last:
            last = change.key
            frames.append(change.frame)
    return (frames[0] if len(frames) == 1 else b"".join(frames)), last


class Subscriber:
    """One client's bounded buffer of changes, and the clock readings the fan-out's watchdog needs.

    The response writing to the client notes when a send starts (`sending_since`) and ends
    (`last_sent`); the watchdog calls `beat()` when a heartbeat is due and `time_out()` when a send has
    waited too long. That keeps timers off the path of every change. The client's token (`token_id`,
    `expires_at`) is the fan-out's to watch too: when it is revoked or expires, `drop()` ends the stream
    with a ``reset`` saying which.
    """

    __slots__ = (
        "filter",
        "capacity",
        "token_id",
        "expires_at",
        "lost",
        "closed",
        "skip_through",
        "task",
        "sending_since",
        "last_sent",
        "timed_out",
        "writer",
        "parked",
        "direct",
        "_heartbeat_due",
        "_items",
        "_waiter",
    )

    def __init__(
        self,
        stream_filter: StreamFilter,
        capacity: int,
        now: float,
        token_id: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.filter = stream_filter
        self.capacity = capacity
        self.token_id = token_id
        """The id of the company token the client connected with (None for an admin): revoking it ends the stream."""
        self.expires_at = expires_at
        """Unix seconds: when that token expires, and the stream with it (None: never)."""
        self.lost: str | None = None
        """Why the client gets ``reset`` and its stream ends: changes were dropped (`slow_client`,
        `stream_interrupted`), or its token no longer holds (`token_revoked`, `token_expired`)."""
        self.closed = False
        self.skip_through: tuple[int, int] = (0, 0)
        """Changes at or before this id are not buffered: the client has them already (its opening, then
        the last change sent)."""
        self.task: asyncio.Task[Any] | None = None
        """The task writing to the client; the watchdog cancels it when a send is stuck."""
        self.sending_since = 0.0
        """Loop time a send started, 0 when none is under way."""
        self.last_sent = now
        self.timed_out = False
        self.writer: Writer | None = None
        """Writes to the client's socket without its task, when the server offers one (`service/stream/protocol.py`)."""
        self.parked: Parked | None = None
        """The client's connection, once parked: it has no task any more."""
        self.direct = False
        """The fan-out may write to the client itself: nothing is buffered and the client's task waits for news."""
        self._heartbeat_due = False
        self._items: list[StreamChange] = []
        self._waiter: asyncio.Future[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._items)

    def offer(self, change: StreamChange) -> None:
        if self.lost or self.closed or change.key <= self.skip_through:
            return
        self.direct = False  # what comes after this change must not overtake it
        if len(self._items) >= self.capacity:
            self.drop(SLOW_CLIENT)
        else:
            self._items.append(change)

    def write_now(self, change: StreamChange, now: float) -> bool:
        """Write `change` to the socket at once if the client is direct and its socket keeps up (True: the
        change is dealt with, written or already sent); False: `offer` it instead."""
        if not self.direct or self.writer is None:
            return False
        if change.key <= self.skip_through:
            return True
        if self.writer.write(change.chunked):
            self.skip_through, self.last_sent = change.key, now
            return True
        return False

    def write_all(self, changes: list[StreamChange], whole: bytes, now: float) -> bool:
        """`write_now` for a run of changes, `whole` being all of them in one chunk; False: `offer` each (what
        was written already is skipped there)."""
        if not self.direct or self.writer is None:
            return False
        if changes[0].key > self.skip_through:
            if self.writer.write(whole):
                self.skip_through, self.last_sent = changes[-1].key, now
                return True
            return False
        return all(self.write_now(change, now) for change in changes)  # overlaps what was sent: one by one

    def drop(self, reason: str) -> None:
        """Empty the buffer (memory stays bounded) and remember why the client must reset; whichever way
        it is served (its task, the fan-out writing directly, a parked connection), it is told so next."""
        self._items.clear()
        self.lost = reason
        self.direct = False  # the client's task sends the reset; nothing may be written before it
        self.wake()

    def restart(self) -> None:
        """Buffer afresh after a loss the caller repairs itself (by re-reading the stream)."""
        self._items.clear()
        self.lost = None

    def wake(self) -> None:
        if self.parked is not None:
            self.parked.wake()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def beat(self, now: float) -> None:
        """A heartbeat is due: written at once if the client is direct; else `next()` answers False once if
        nothing else is waiting."""
        if self.direct and self.writer is not None and self.writer.write(HEARTBEAT_CHUNK):
            self.last_sent = now
            return
        self._heartbeat_due = True
        self.wake()

    def time_out(self) -> None:
        """A send has waited too long: stop the task writing to this client."""
        self.timed_out = True
        if self.parked is not None:
            self.parked.abort()
        elif self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        self.closed = True
        self.direct = False
        self._items.clear()
        self.wake()

    def take_heartbeat(self) -> bool:
        """Whether a heartbeat was due (it is not any more)."""
        due, self._heartbeat_due = self._heartbeat_due, False
        return due

    @property
    def idle(self) -> bool:
        """Nothing to send and nothing to say: the client's task would now wait for news."""
        return not (self._items or self._heartbeat_due or self.lost or self.closed)

    def take_buffered(self) -> list[StreamChange]:
        """Every change buffered now, oldest first; the buffer is left empty."""
        items, self._items = self._items, []
        return items

    async def next(self) -> StreamChange | None | Literal[False]:
        """The next buffered change; None once the subscriber is closed or has lost changes; False
        when a heartbeat is due. While it waits, the fan-out writes to the client directly (`write_now`):
        everything sent before has been written by then, and nothing is buffered."""
        while True:
            if self.closed or self.lost:
                return None
            if self._items:
                return self._items.pop(0)
            if self.take_heartbeat():
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            self.direct = self.writer is not None
            try:
                await self._waiter
            finally:
                self._waiter = None
                self.direct = False
