"""One connected stream client, as the fan-out sees it: what it wants, what it is owed, whether it keeps up.

A `StreamChange` is one entry of the change feed with its SSE frame encoded once and shared by every client;
a `Subscriber` is one client's bounded buffer of them. The fan-out only appends to buffers and wakes the
clients it touched; each client's own request task takes what is buffered and writes it with the ASGI
`send` (`service/stream/routes.py`). Both exist in the thousands per process, so they are kept small: slots,
a plain list, a future only while the task waits.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

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


def parse_id(text: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a sortable pair; the caller has checked `STREAM_ID`."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


@dataclass(slots=True)
class StreamChange:
    """One change of the feed, with its SSE frame (``id``, ``event``, ``data``) ready to send."""

    id: str
    key: tuple[int, int]
    company_id: str
    connection_id: str
    frame: bytes
    received_at: float | None = None
    """When the receiver received the webhook that caused it (unix seconds), until `take_receipt` gives it out."""

    def take_receipt(self) -> float | None:
        """The receipt time the first time it is asked for, then None: the `delivered` stage is observed once
        per change and process, at its first write to a client, not once per client."""
        received, self.received_at = self.received_at, None
        return received

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
        return cls(ident, parse_id(ident), company_id, connection_id, frame, _seconds(values.get("received_at")))


def _seconds(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


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
    waited too long, so no timer runs per client or per change. The client's token (`token_id`,
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
        "receipts",
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
        the last change taken)."""
        self.task: asyncio.Task[Any] | None = None
        """The task writing to the client; the watchdog cancels it when a send is stuck."""
        self.sending_since = 0.0
        """Loop time a send started, 0 when none is under way."""
        self.last_sent = now
        self.timed_out = False
        self.receipts: list[float] = []
        """Receipt times (unix seconds) of the changes in the chunks taken that no client of this process was
        sent before: the response observes their `delivered` stage once the chunk is written."""
        self._heartbeat_due = False
        self._items: list[StreamChange] = []
        self._waiter: asyncio.Future[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._items)

    def offer(self, change: StreamChange) -> None:
        """Buffer `change` unless the client has it already; a full buffer is dropped instead (`slow_client`).
        The caller wakes the client once it has offered everything it read."""
        if self.lost or self.closed or change.key <= self.skip_through:
            return
        if len(self._items) >= self.capacity:
            self.drop(SLOW_CLIENT)
        else:
            self._items.append(change)

    def drop(self, reason: str) -> None:
        """Empty the buffer (memory stays bounded) and remember why the client must reset."""
        self._items.clear()
        self.lost = reason
        self.wake()

    def restart(self) -> None:
        """Buffer afresh after a loss the caller repairs itself (by re-reading the stream)."""
        self._items.clear()
        self.lost = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def beat(self) -> None:
        """A heartbeat is due: `next_chunk()` answers one if nothing else is waiting."""
        self._heartbeat_due = True
        self.wake()

    def time_out(self) -> None:
        """A send has waited too long: stop the task writing to this client."""
        self.timed_out = True
        if self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self.wake()

    async def next_chunk(self) -> bytes | None:
        """What to send the client next: every buffered change it does not have yet, in one chunk, or a
        heartbeat when one is due and nothing else is; None once the stream is over (closed, or `lost`:
        the caller then sends the ``reset``). Waits until there is something."""
        while not (self.closed or self.lost):
            if self._items:
                items, self._items = self._items, []
                chunk, self.skip_through = unsent(items, self.skip_through)
                self.receipts += [at for change in items if (at := change.take_receipt()) is not None]
                if chunk:
                    self._heartbeat_due = False
                    return chunk
            elif self._heartbeat_due:
                self._heartbeat_due = False
                return HEARTBEAT
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        return None
