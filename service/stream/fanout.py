"""One reader per web process: XREAD the change feed once, offer each change to this process's clients.

A subscriber receives every matching change read after it subscribed: the reader's position only ever names
an entry already handed out, so a client that subscribes first and then reads the stream itself (XRANGE)
misses nothing, and drops a repeat by id. Buffers are bounded: one change too many and the client resets.
One watchdog task per process does what would take a timer per client: heartbeats, send timeouts, token
expiry, letting every client go when the server stops; a second task ends the streams of revoked tokens. With no
client (no company-token client) each of them sleeps until one subscribes, so an idle process's only wake-up is
the reader's XREAD timing out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from schemas.errors import Unavailable
from service.security.revocation import RevocationList
from service.stream.subscriber import (
    STREAM_INTERRUPTED,
    TOKEN_EXPIRED,
    TOKEN_REVOKED,
    StreamChange,
    StreamFilter,
    Subscriber,
)
from workers.ledger.changes import stream_key
from workers.runtime.metrics import set_sse_clients

log = logging.getLogger("synctrack.stream")

READ_COUNT = 1_000
"""Most changes read per XREAD; never more than half a client's buffer (see `Fanout.read_count`)."""
READ_BLOCK_MS = 2_000
"""How long one XREAD waits for news; well below a Redis client's socket timeout (redis-py: 5 s)."""
RETRY_SECONDS = 1.0
"""Pause before reading again after Redis failed."""
WATCH_SECONDS = 0.5
"""How often the watchdog looks at every client: the precision of heartbeats, send timeouts and token expiry."""
TOKEN_CHECK_SECONDS = 2.0
"""How often the revocation list is read for this process's company-token clients: a revoked token's
stream ends this long after the revocation at most (plus one Redis round trip)."""

REDIS_SLOTS = 32
"""Redis calls this process's stream requests make at once (opening, catch-up). Bounded because a
burst of reconnecting clients must queue, not exhaust the client's pool (redis-py's asyncio pool
refuses a 101st connection instead of waiting for one)."""

SNAPSHOT_THREADS = 4
"""Snapshots read from the database at once, each on a thread of its own. Reading one takes milliseconds
and mostly holds the interpreter, so more threads would not serve a burst of reconnecting clients sooner;
each would only keep its stack and allocator arena for the life of the process."""

UNFILTERED = frozenset({"*"})


class StreamUnavailable(Unavailable):
    """Raised by `Fanout.subscribe` while the reader does not know where the stream stands yet, or
    once the server is stopping."""


class Fanout:
    """The per-process reader of the change feed and the registry of this process's subscribers."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        namespace: str,
        capacity: int,
        *,
        heartbeat_seconds: float = 15.0,
        send_timeout_seconds: float = 30.0,
        exiting: Callable[[], bool] | None = None,
        revocations: RevocationList | None = None,
    ) -> None:
        """`exiting` tells when the server begins to stop: every client is then let go, so that a
        graceful shutdown does not wait on streams that never end by themselves. `revocations`: the
        token revocation list the streams of company tokens are held to (None: no client has a token)."""
        self.redis = client
        self.revocations = revocations
        self.heartbeat_seconds = heartbeat_seconds
        self.send_timeout_seconds = send_timeout_seconds
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
        self.snapshot_threads = anyio.CapacityLimiter(SNAPSHOT_THREADS)
        self._subscribers: set[Subscriber] = set()
        self._unfiltered: dict[str, set[Subscriber]] = {}
        self._by_company: dict[str, set[Subscriber]] = {}
        self._by_connection: dict[str, set[Subscriber]] = {}
        self._by_token: dict[str, set[Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._token_watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._has_clients = asyncio.Event()
        self._has_token_clients = asyncio.Event()

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
        self._watcher = asyncio.create_task(self._watch(), name="synctrack-stream-watchdog")
        if self.revocations is not None:
            self._token_watcher = asyncio.create_task(self._watch_tokens(), name="synctrack-stream-tokens")

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait({self._watcher})
            self._watcher = None
        if self._token_watcher is not None:
            self._token_watcher.cancel()
            done, _ = await asyncio.wait({self._token_watcher}, timeout=0.1)
            if not done:  # a cancellation redis-py swallowed (see below): closing its connections ends the read
                await self.redis.connection_pool.disconnect()
                await asyncio.wait({self._token_watcher}, timeout=RETRY_SECONDS)
            self._token_watcher = None
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

    def subscribe(
        self, stream_filter: StreamFilter, token_id: str | None = None, expires_at: float | None = None
    ) -> Subscriber:
        """A new client wanting `stream_filter`; `token_id` and `expires_at` (unix seconds) are those of the
        company token it connected with: the stream ends when that token is revoked or expires."""
        if self.position is None or self._stopping:
            raise StreamUnavailable("the change feed has not been reached yet, or the server is stopping")
        sub = Subscriber(stream_filter, self.capacity, asyncio.get_running_loop().time(), token_id, expires_at)
        self._subscribers.add(sub)
        set_sse_clients(len(self._subscribers))
        index, keys = self._index_of(sub)
        for key in keys:
            index.setdefault(key, set()).add(sub)
        if token_id is not None:
            self._by_token.setdefault(token_id, set()).add(sub)
            self._has_token_clients.set()
        self._has_clients.set()
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
        if sub.token_id is not None:
            holders = self._by_token.get(sub.token_id, set())
            holders.discard(sub)
            if not holders:
                self._by_token.pop(sub.token_id, None)

    def _index_of(self, sub: Subscriber) -> tuple[dict[str, set[Subscriber]], frozenset[str]]:
        # Indexed by the most selective filter so a change only visits subscribers likely to want it.
        if sub.filter.connection_ids:
            return self._by_connection, sub.filter.connection_ids
        if sub.filter.company_ids:
            return self._by_company, sub.filter.company_ids
        return self._unfiltered, UNFILTERED

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self.exiting and self.exiting()):
            if not self._subscribers:
                self._has_clients.clear()
                await self._has_clients.wait()
                continue
            await asyncio.sleep(WATCH_SECONDS)
            self.check(loop.time(), time.time())
        log.info("msg=stream_closing reason=server_stopping clients=%d", len(self._subscribers))
        self._stopping = True
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    def check(self, now: float, wall: float) -> None:
        """End the stream of every client whose token has expired by `wall` (unix seconds); time out every
        client whose send has waited longer than the send timeout (`now`: the loop's clock); give every
        client idle for a heartbeat interval its heartbeat."""
        for sub in self._subscribers:
            if sub.expires_at is not None and wall >= sub.expires_at and not sub.lost:
                log.info("msg=stream_client_ended reason=%s token_id=%s", TOKEN_EXPIRED, sub.token_id)
                sub.drop(TOKEN_EXPIRED)
            elif sub.sending_since:
                if self.send_timeout_seconds and now - sub.sending_since > self.send_timeout_seconds:
                    sub.time_out()
            elif self.heartbeat_seconds and now - sub.last_sent >= self.heartbeat_seconds:
                sub.beat()

    async def _watch_tokens(self) -> None:
        """Every `TOKEN_CHECK_SECONDS`, end the streams of the tokens revoked since. While the list cannot be
        read nothing is ended: the change feed is in the same Redis, so no change reaches a client then."""
        assert self.revocations is not None
        failing = False
        while not self._stopping:
            if not self._by_token:
                self._has_token_clients.clear()
                await self._has_token_clients.wait()
            await asyncio.sleep(TOKEN_CHECK_SECONDS)
            if not self._by_token:
                continue
            try:
                revoked = await self.revocations.revoked_among(list(self._by_token))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # like the reader, this task outlives any failure
                if self._stopping:
                    return
                if not failing:
                    log.warning("msg=stream_token_check_failed error=%r", f"{type(exc).__name__}: {exc}")
                failing = True
                continue
            failing = False
            self.end_revoked(revoked)

    def end_revoked(self, token_ids: Iterable[str]) -> None:
        """End the stream of every client of this process connected with one of `token_ids`."""
        for token_id in token_ids:
            for sub in list(self._by_token.get(token_id, ())):
                if not sub.lost:
                    log.info("msg=stream_client_ended reason=%s token_id=%s", TOKEN_REVOKED, token_id)
                    sub.drop(TOKEN_REVOKED)

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
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    return  # a cancellation redis-py turned into a connection error still ends the reader
                if not interrupted:
                    log.warning("msg=stream_reader_interrupted error=%r", f"{type(exc).__name__}: {exc}")
                interrupted = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if reply:
                try:
                    self.dispatch(reply.items() if isinstance(reply, dict) else reply)
                except Exception:  # a fault in handing out must not stop the reader for every client
                    log.exception("msg=stream_dispatch_failed clients=%d", len(self._subscribers))
                    for sub in self._subscribers:  # any of them may have missed changes
                        sub.drop(STREAM_INTERRUPTED)

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
        """Offer each entry of an XREAD reply to the matching subscribers, then wake each of them once."""
        changes = self.parse(reply)
        if not changes:
            return
        touched: set[Subscriber] = set()
        for sub in self._unfiltered.get("*", ()):
            for change in changes:
                self._offer(sub, change, touched)
        for change in changes:
            for sub in self._filtered_candidates(change):
                if sub.filter.matches(change.company_id, change.connection_id):
                    self._offer(sub, change, touched)
        for sub in touched:
            sub.wake()

    def parse(self, reply: Iterable[Any]) -> list[StreamChange]:
        """The changes of an XREAD reply, in order; the reader's position moves past every entry."""
        changes = []
        for _stream, entries in reply:
            for entry_id, fields in entries:
                change = StreamChange.from_entry(entry_id, fields)
                self.position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                if change is None:
                    log.warning("msg=stream_entry_skipped id=%s reason=missing_fields", self.position)
                else:
                    changes.append(change)
        return changes

    def _offer(self, sub: Subscriber, change: StreamChange, touched: set[Subscriber]) -> None:
        if sub.lost:
            return
        sub.offer(change)
        touched.add(sub)
        if sub.lost:
            self.overflows += 1
            log.info("msg=stream_client_overflow capacity=%d", sub.capacity)

    def _filtered_candidates(self, change: StreamChange) -> Iterable[Subscriber]:
        yield from self._by_company.get(change.company_id, ())
        yield from self._by_connection.get(change.connection_id, ())
