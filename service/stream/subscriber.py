"""One connected stream client, as the fan-out sees it: what it wants, what it is owed, whether it keeps up.

A `StreamChange` is one feed entry with its SSE frame encoded once and shared by every client; a `Subscriber`
is one client's bounded buffer of them, drained by the client's own request task (`service/stream/response.py`).
The stream's own frames are here too: the heartbeat and ``reset``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("synctrack.stream")

STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")

# Why a client gets ``reset`` and its stream ends.
SLOW_CLIENT = "slow_client"
STREAM_INTERRUPTED = "stream_interrupted"
TOKEN_REVOKED = "token_revoked"
TOKEN_EXPIRED = "token_expired"

RESET_DETAIL = {
    "last_event_id_not_found": "Last-Event-ID is not in the stream (unknown, or older than the retention window)",
    SLOW_CLIENT: "the client read too slowly and its buffer overflowed",
    STREAM_INTERRUPTED: "the change feed was interrupted and changes may have been missed",
}
TOKEN_DETAIL = {
    TOKEN_REVOKED: "the token this stream was opened with has been revoked; the stream ends",
    TOKEN_EXPIRED: "the token this stream was opened with has expired; reconnect with a new token",
}
"""Resets that end a company token's stream: not worth re-reading the state with that token."""


def frame(event_id: str, name: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


def reset_frame(position: str, reason: str) -> bytes:
    detail = TOKEN_DETAIL.get(reason) or RESET_DETAIL.get(reason, reason) + "; re-read the state from the JSON API"
    return frame(position, "reset", {"reason": reason, "detail": detail, "event_id": None})


HEARTBEAT = b": heartbeat\n\n"
"""A comment line: keeps proxies from closing an idle stream; EventSource ignores it."""


def text(value: bytes | str) -> str:
    """A Redis reply's value as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_id(ident: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a sortable pair; the caller has checked `STREAM_ID`."""
    ms, _, seq = ident.partition("-")
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
    """When the receiver received the webhook behind it (unix seconds), until `take_receipt` gives it out."""

    def take_receipt(self) -> float | None:
        """The receipt time the first time it is asked for, then None: `delivered` is observed once per change."""
        received, self.received_at = self.received_at, None
        return received

    @classmethod
    def from_entry(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> StreamChange | None:
        """Build from a stream entry; None for an entry without the feed's fields."""
        ident = text(entry_id)
        raw = {text(k): v for k, v in fields.items()}
        if raw.get("event") is None or raw.get("data") is None:
            return None
        values = {k: text(v) for k, v in raw.items() if k != "data"}
        body = raw["data"] if isinstance(raw["data"], bytes) else str(raw["data"]).encode()
        frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (ident.encode(), values["event"].encode(), body)
        try:
            received_at = float(values["received_at"]) if values.get("received_at") else None
        except ValueError:
            received_at = None
        company_id, connection_id = values.get("company_id", ""), values.get("connection_id", "")
        return cls(ident, parse_id(ident), company_id, connection_id, frame, received_at)


def read_entries(entries: Iterable[Any]) -> tuple[list[StreamChange], str | None]:
    """The changes among stream entries, in order, and the id of the last entry (None when there is none)."""
    changes, last = [], None
    for entry_id, fields in entries:
        change = StreamChange.from_entry(entry_id, fields)
        last = text(entry_id)
        if change is None:
            log.warning("msg=stream_entry_skipped id=%s reason=missing_fields", last)
        else:
            changes.append(change)
    return changes, last


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which changes a client wants; an empty set means "any". Both given: both must match."""

    company_ids: frozenset[str] = frozenset()
    connection_ids: frozenset[str] = frozenset()

    def matches(self, company_id: str, connection_id: str) -> bool:
        return (not self.company_ids or company_id in self.company_ids) and (
            not self.connection_ids or connection_id in self.connection_ids
        )


def unsent(changes: list[StreamChange], last: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
    """The frames of `changes` after the id `last`, in one chunk, and the id of the last of them; a change at
    or before `last` was sent already (catch-up and buffer overlap)."""
    frames = []
    for change in changes:
        if change.key > last:
            last = change.key
            frames.append(change.frame)
    return b"".join(frames), last  # one frame is joined without a copy


@dataclass(slots=True, eq=False)
class Subscriber:
    """One client's bounded buffer of changes, and the clock readings the fan-out's watchdog needs.

    The response notes when a send starts (`sending_since`) and ends (`last_sent`); the watchdog calls `beat()`
    when a heartbeat is due, `time_out()` when a send is stuck, and `drop()` when the client's token no longer holds.
    """

    filter: StreamFilter
    capacity: int
    last_sent: float
    """Loop time the last send ended (at first: when the client subscribed)."""
    token_id: str | None = None
    """The company token the client connected with (None for an admin): revoking it ends the stream."""
    expires_at: float | None = None
    """Unix seconds: when that token, and the stream with it, expire (None: never)."""
    lost: str | None = field(default=None, init=False)
    """Why the client must reset (one of the reasons above)."""
    closed: bool = field(default=False, init=False)
    skip_through: tuple[int, int] = field(default=(0, 0), init=False)
    """Changes at or before this id are not buffered: the client has them already."""
    task: asyncio.Task[Any] | None = field(default=None, init=False)
    sending_since: float = field(default=0.0, init=False)
    """Loop time a send started, 0 when none is under way."""
    timed_out: bool = field(default=False, init=False)
    receipts: list[float] = field(default_factory=list, init=False)
    """Receipt times of the changes taken, for the response to observe once their chunk is written."""
    _heartbeat_due: bool = field(default=False, init=False)
    _items: list[StreamChange] = field(default_factory=list, init=False)
    _waiter: asyncio.Future[None] | None = field(default=None, init=False)

    @property
    def depth(self) -> int:
        return len(self._items)

    def offer(self, change: StreamChange) -> None:
        """Buffer `change` unless the client has it already; a full buffer is dropped instead (`slow_client`)."""
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
        """Every buffered change the client does not have yet, in one chunk, else a due heartbeat; None once
        the stream is over (closed, or `lost`: the caller then sends the ``reset``). Waits until there is something."""
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
