"""One reader per web process: XREAD the change feed once, offer each change to this process's clients.

The reader's position only names entries already handed out, so a client that subscribes and then reads the
stream itself (XRANGE) misses nothing. One watchdog task keeps every client's heartbeats, send timeouts and token
expiry, a second ends the streams of revoked tokens; both sleep while no client needs them.
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
    STREAM_ID,
    STREAM_INTERRUPTED,
    TOKEN_EXPIRED,
    TOKEN_REVOKED,
    StreamChange,
    StreamFilter,
    Subscriber,
    read_entries,
    text,
)
from workers.ledger.changes import stream_key
from workers.runtime.metrics import set_sse_clients

log = logging.getLogger("synctrack.stream")

READ_COUNT = 1_000  # changes per XREAD, and never more than half a client's buffer
READ_BLOCK_MS = 2_000  # well below a Redis client's socket timeout (redis-py: 5 s)
RETRY_SECONDS = 1.0
WATCH_SECONDS = 0.5  # the precision of heartbeats, send timeouts and token expiry
TOKEN_CHECK_SECONDS = 2.0  # the longest a revoked token's stream outlives the revocation
REDIS_SLOTS = 32
"""Redis calls stream requests make at once: a burst of reconnecting clients queues instead of exhausting
redis-py's asyncio pool, which refuses a connection over its limit rather than waiting for one."""
SNAPSHOT_THREADS = 4  # snapshots mostly hold the interpreter: more threads would not serve a burst sooner

Index = tuple[str, str]
EVERYONE: Index = ("*", "")


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
        """`exiting` tells when the server begins to stop, so every client is let go then; `revocations` is the
        list company tokens' streams are held to (None: no client has a token)."""
        self.redis = client
        self.revocations = revocations
        self.heartbeat_seconds = heartbeat_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.exiting = exiting
        self.key = stream_key(namespace)
        self.capacity = capacity
        # Clients drain their buffers while the reader waits: a larger batch would overflow one that keeps up.
        self.read_count = max(1, min(READ_COUNT, capacity // 2))
        self.position: str | None = None
        """Id of the last entry handed out (or the stream's tail at start); None until known."""
        self.overflows = 0
        self.redis_slots = asyncio.Semaphore(REDIS_SLOTS)
        self.snapshot_threads = anyio.CapacityLimiter(SNAPSHOT_THREADS)
        self._subscribers: set[Subscriber] = set()
        self._index: dict[Index, set[Subscriber]] = {}
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
        for task in (self._watcher, self._token_watcher, self._task):
            if task is None:
                continue
            # The flag, not only the cancellation, ends a loop: redis-py can swallow a cancellation that lands
            # while it takes a connection, and then blocks in its read; closing the connections ends that read.
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.1)
            if not done:
                await self.redis.connection_pool.disconnect()
                await asyncio.wait({task}, timeout=RETRY_SECONDS + READ_BLOCK_MS / 1000)
        self._task = self._watcher = self._token_watcher = None
        self._unsubscribe_all()

    async def _info(self) -> dict[Any, Any]:
        try:
            info: dict[Any, Any] = await self.redis.xinfo_stream(self.key)
        except ResponseError:  # no stream yet
            return {"last-generated-id": "0-0"}
        return info

    async def tail(self) -> str:
        """The id of the newest entry ever added to the stream (``0-0`` for no stream)."""
        return text((await self._info())["last-generated-id"])

    async def resume_point(self, event_id: str) -> str | None:
        """Where a client (or the reader) that last saw `event_id` resumes; None when it must reset.

        An id resumes when it is still in the stream (trimming only removes the oldest entries), or is the stream's
        newest id, or is ``0-0`` on a stream never trimmed (a snapshot of an empty stream); else a gap may follow."""
        if not STREAM_ID.fullmatch(event_id):
            return None
        if await self.redis.xrange(self.key, event_id, event_id, count=1):
            return event_id
        info = await self._info()
        if event_id == text(info["last-generated-id"]):
            return event_id
        never_trimmed = info.get("entries-added") == info.get("length")
        return event_id if event_id == "0-0" and never_trimmed else None

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
        for key in _index_keys(sub.filter):
            self._index.setdefault(key, set()).add(sub)
        if token_id is not None:
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
        for key in _index_keys(sub.filter):
            bucket = self._index.get(key, set())
            bucket.discard(sub)
            if not bucket:
                self._index.pop(key, None)

    def _unsubscribe_all(self) -> None:
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

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
        self._unsubscribe_all()

    def check(self, now: float, wall: float) -> None:
        """End the stream of every client whose token has expired by `wall` (unix seconds), time out every
        stuck send (`now`: the loop's clock), and give every client idle for a heartbeat interval its heartbeat."""
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
        """End the streams of revoked tokens. While the list cannot be read nothing is ended: the change feed
        is in the same Redis, so no change reaches a client then either."""
        assert self.revocations is not None
        failing = False
        while not self._stopping:
            if not any(sub.token_id is not None for sub in self._subscribers):
                self._has_token_clients.clear()
                await self._has_token_clients.wait()
            await asyncio.sleep(TOKEN_CHECK_SECONDS)
            if not (token_ids := {sub.token_id for sub in self._subscribers if sub.token_id is not None}):
                continue
            try:
                revoked = await self.revocations.revoked_among(sorted(token_ids))
            except Exception as exc:  # like the reader, this task outlives any failure
                if self._stopping:
                    return
                if not failing:
                    log.warning("msg=stream_token_check_failed error=%r", f"{type(exc).__name__}: {exc}")
                failing = True
                continue
            failing = False
            for sub in self._subscribers:
                if sub.token_id in revoked and not sub.lost:
                    log.info("msg=stream_client_ended reason=%s token_id=%s", TOKEN_REVOKED, sub.token_id)
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
        if await self.resume_point(self.position) is not None:
            return
        tail = await self.tail()
        log.warning(
            "msg=stream_position_lost position=%s tail=%s clients=%d", self.position, tail, len(self._subscribers)
        )
        for sub in self._subscribers:
            sub.drop(STREAM_INTERRUPTED)
        self.position = tail

    def dispatch(self, reply: Iterable[Any]) -> None:
        """Offer each entry of an XREAD reply to the matching subscribers, then wake each of them once; the
        reader's position moves past every entry."""
        changes: list[StreamChange] = []
        for _stream, entries in reply:
            found, last = read_entries(entries)
            changes += found
            self.position = last or self.position
        touched: set[Subscriber] = set()
        for change in changes:
            for key in (EVERYONE, ("company", change.company_id), ("connection", change.connection_id)):
                for sub in self._index.get(key, ()):
                    if sub.lost or not sub.filter.matches(change.company_id, change.connection_id):
                        continue
                    sub.offer(change)
                    touched.add(sub)
                    if sub.lost:
                        self.overflows += 1
                        log.info("msg=stream_client_overflow capacity=%d", sub.capacity)
        for sub in touched:
            sub.wake()


def _index_keys(stream_filter: StreamFilter) -> list[Index]:
    # Indexed by the most selective filter so a change only visits subscribers likely to want it.
    if stream_filter.connection_ids:
        return [("connection", ident) for ident in stream_filter.connection_ids]
    if stream_filter.company_ids:
        return [("company", ident) for ident in stream_filter.company_ids]
    return [EVERYONE]
