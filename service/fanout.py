"""One reader per web process: XREAD the change feed once, hand each change to this process's clients.

Workers XADD changes to the Redis Stream ``{ns}:changes`` (`workers/changes.py`). Every web process
runs one `Fanout`: a task that reads the stream from where it last was and offers each change to the
`Subscriber`s (one per connected client) whose filter matches. A change is encoded as an SSE frame
once and shared, so a client costs a reference per buffered change, not a copy.

Delivery contract, relied on by `service/stream.py`: a subscriber receives every matching change
read after it subscribed. The reader's position only ever names an entry already handed out, so a
client that subscribes first and then reads the stream itself (XRANGE) misses nothing; it may see a
change twice, and drops the repeat by id.

Memory is bounded: a subscriber holds at most `capacity` changes. One more and its buffer is emptied
and it is marked `lost`; the client is then told to `reset` (or, while it is still catching up from
Redis, simply re-reads what was dropped).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from workers.changes import stream_key
from workers.metrics import set_sse_clients

log = logging.getLogger("synctrack.stream")

STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
READ_COUNT = 1_000
"""Most changes read per XREAD; never more than half a client's buffer (see `Fanout.read_count`)."""
READ_BLOCK_MS = 2_000
"""How long one XREAD waits for news; well below a Redis client's socket timeout (redis-py: 5 s)."""
EXIT_POLL_SECONDS = 0.5
RETRY_SECONDS = 1.0
"""Pause before reading again after Redis failed."""

REDIS_SLOTS = 32
"""Redis calls this process's stream requests make at once (opening, catch-up). Bounded because a
burst of reconnecting clients must queue, not exhaust the client's pool (redis-py's asyncio pool
refuses a 101st connection instead of waiting for one)."""

UNFILTERED = frozenset({"*"})
SLOW_CLIENT = "slow_client"
STREAM_INTERRUPTED = "stream_interrupted"


def parse_id(text: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a sortable pair; the caller has checked `STREAM_ID`."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


class StreamUnavailable(Exception):
    """Raised by `Fanout.subscribe` while the reader does not yet know where the stream stands."""


@dataclass(frozen=True, slots=True)
class StreamChange:
    """One change of the feed, with its SSE frame (``id``, ``event``, ``data``) ready to send."""

    id: str
    key: tuple[int, int]
    company_id: str
    connection_id: str
    frame: bytes

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
        return cls(ident, parse_id(ident), values.get("company_id", ""), values.get("connection_id", ""), frame)


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which changes a client wants; an empty set means "any". Both given: both must match."""

    company_ids: frozenset[str] = frozenset()
    connection_ids: frozenset[str] = frozenset()

    def matches(self, company_id: str, connection_id: str) -> bool:
        return (not self.company_ids or company_id in self.company_ids) and (
            not self.connection_ids or connection_id in self.connection_ids
        )


class Subscriber:
    """One client's bounded buffer of changes.

    Kept small (it exists once per connected client): slots, a plain list, and a future only while
    the client waits.
    """

    __slots__ = ("filter", "capacity", "lost", "closed", "_items", "_waiter")

    def __init__(self, stream_filter: StreamFilter, capacity: int) -> None:
        self.filter = stream_filter
        self.capacity = capacity
        self.lost: str | None = None
        """Why changes were dropped (`slow_client`, `stream_interrupted`); the client must reset."""
        self.closed = False
        self._items: list[StreamChange] = []
        self._waiter: asyncio.Future[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._items)

    def offer(self, change: StreamChange) -> None:
        if self.lost or self.closed:
            return
        if len(self._items) >= self.capacity:
            self.drop(SLOW_CLIENT)
        else:
            self._items.append(change)

    def drop(self, reason: str) -> None:
        """Empty the buffer (memory stays bounded) and remember that changes were lost."""
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

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self.wake()

    async def next(self, timeout: float | None = None) -> StreamChange | None | Literal[False]:
        """The next buffered change; None once the subscriber is closed or has lost changes; False
        when `timeout` seconds passed without one (time for a heartbeat)."""
        while True:
            if self.closed or self.lost:
                return None
            if self._items:
                return self._items.pop(0)
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, self.wake) if timeout else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if timer is not None and not self._items and not self.closed and not self.lost:
                return False


class Fanout:
    """The per-process reader of the change feed and the registry of this process's subscribers."""

    def __init__(
        self, client: redis.asyncio.Redis, namespace: str, capacity: int, exiting: Callable[[], bool] | None = None
    ) -> None:
        """`exiting` tells when the server begins to stop: every client is then let go, so that a
        graceful shutdown does not wait on streams that never end by themselves."""
        self.redis = client
        self.exiting = exiting
        self.key = stream_key(namespace)
        self.capacity = capacity
        # Clients drain their buffers while the reader waits on Redis; a batch larger than a buffer
        # would overflow even a client that keeps up.
        self.read_count = max(1, min(READ_COUNT, capacity // 2))
        self.position: str | None = None
        """Id of the last entry handed out (or the stream's tail at start); None until known."""
        self.overflows = 0
        self.redis_slots = asyncio.Semaphore(REDIS_SLOTS)
        self._subscribers: set[Subscriber] = set()
        self._unfiltered: dict[str, set[Subscriber]] = {}
        self._by_company: dict[str, set[Subscriber]] = {}
        self._by_connection: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def buffered(self) -> int:
        """Changes waiting in all buffers of this process."""
        return sum(sub.depth for sub in self._subscribers)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Learn the stream's tail (if Redis answers now) and start reading from it."""
        try:
            self.position = await self.tail()
        except RedisError as exc:
            log.warning("msg=stream_reader_waiting_for_redis error=%r", str(exc))
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="synctrack-stream-reader")
        if self.exiting is not None:
            self._watcher = asyncio.create_task(self._watch_exit(self.exiting), name="synctrack-stream-exit")

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait({self._watcher})
            self._watcher = None
        if self._task is not None:
            # The flag, not only the cancellation, ends the loop: redis-py can swallow a cancellation
            # that lands while it takes a connection, and then blocks in XREAD; closing the
            # connections ends that read at once.
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=0.1)
            if not done:
                await self.redis.connection_pool.disconnect()
                await asyncio.wait({self._task}, timeout=RETRY_SECONDS + READ_BLOCK_MS / 1000)
            self._task = None
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    async def tail(self) -> str:
        """The id of the newest entry ever added to the stream (``0-0`` for no stream)."""
        try:
            info = await self.redis.xinfo_stream(self.key)
        except ResponseError:  # no such key
            return "0-0"
        last = info["last-generated-id"]
        return last.decode() if isinstance(last, bytes) else str(last)

    def subscribe(self, stream_filter: StreamFilter) -> Subscriber:
        if self.position is None or self._stopping:
            raise StreamUnavailable("the change feed has not been reached yet, or the server is stopping")
        sub = Subscriber(stream_filter, self.capacity)
        self._subscribers.add(sub)
        set_sse_clients(len(self._subscribers))
        index, keys = self._index_of(sub)
        for key in keys:
            index.setdefault(key, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget `sub` and free its buffer; calling it twice is harmless."""
        sub.close()
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        set_sse_clients(len(self._subscribers))
        index, keys = self._index_of(sub)
        for key in keys:
            bucket = index.get(key, set())
            bucket.discard(sub)
            if not bucket:
                index.pop(key, None)

    def _index_of(self, sub: Subscriber) -> tuple[dict[str, set[Subscriber]], frozenset[str]]:
        # Indexed by the most selective filter so a change only visits subscribers likely to want it.
        if sub.filter.connection_ids:
            return self._by_connection, sub.filter.connection_ids
        if sub.filter.company_ids:
            return self._by_company, sub.filter.company_ids
        return self._unfiltered, UNFILTERED

    async def _watch_exit(self, exiting: Callable[[], bool]) -> None:
        while not exiting():
            await asyncio.sleep(EXIT_POLL_SECONDS)
        log.info("msg=stream_closing reason=server_stopping clients=%d", len(self._subscribers))
        self._stopping = True
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    async def _run(self) -> None:
        interrupted = False
        while not self._stopping:
            try:
                if self.position is None:
                    self.position = await self.tail()
                elif interrupted:
                    await self._resume_after_interruption()
                interrupted = False
                reply = await self.redis.xread({self.key: self.position}, count=self.read_count, block=READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the reader must outlive any failure; clients wait meanwhile
                if self._stopping:
                    return
                if not interrupted:
                    log.warning("msg=stream_reader_interrupted error=%r", f"{type(exc).__name__}: {exc}")
                interrupted = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if reply:
                self.dispatch(reply.items() if isinstance(reply, dict) else reply)

    async def _resume_after_interruption(self) -> None:
        """If our position left the stream while Redis was away (trimmed, or a Redis that lost its
        data), changes may have been missed: every client resets, and reading goes on from the tail."""
        assert self.position is not None
        if self.position == "0-0" or await self.redis.xrange(self.key, self.position, self.position, count=1):
            return
        tail = await self.tail()
        if tail == self.position:
            return
        log.warning(
            "msg=stream_position_lost position=%s tail=%s clients=%d", self.position, tail, len(self._subscribers)
        )
        for sub in self._subscribers:
            sub.drop(STREAM_INTERRUPTED)
        self.position = tail

    def dispatch(self, reply: Iterable[Any]) -> None:
        """Offer each entry of an XREAD reply to the matching subscribers, then wake them once."""
        touched: set[Subscriber] = set()
        for _stream, entries in reply:
            for entry_id, fields in entries:
                change = StreamChange.from_entry(entry_id, fields)
                self.position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                if change is None:
                    log.warning("msg=stream_entry_skipped id=%s reason=missing_fields", self.position)
                    continue
                for sub in self._candidates(change):
                    if sub.filter.matches(change.company_id, change.connection_id) and not sub.lost:
                        sub.offer(change)
                        touched.add(sub)
                        if sub.lost:
                            self.overflows += 1
                            log.info("msg=stream_client_overflow capacity=%d", sub.capacity)
        for sub in touched:
            sub.wake()

    def _candidates(self, change: StreamChange) -> Iterable[Subscriber]:
        yield from self._unfiltered.get("*", ())
        yield from self._by_company.get(change.company_id, ())
        yield from self._by_connection.get(change.connection_id, ())
