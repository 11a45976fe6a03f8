"""One client's events, from its opening to its last change, written to its socket with the ASGI `send`.

The opening (a ``snapshot`` read from the ledger, a ``reset``, or the changes missed, read from Redis page by page)
is followed by what the fan-out buffered, skipping every id at or before the last one sent, so there is never a gap
nor a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from sse_starlette.sse import AppStatus
from starlette.types import Receive, Scope, Send

from service.stream.fanout import Fanout
from service.stream.subscriber import (
    SLOW_CLIENT,
    StreamFilter,
    Subscriber,
    frame,
    parse_id,
    read_entries,
    reset_frame,
    unsent,
)
from workers.ledger.durations import load_timings
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.tables import Connection, Sync
from workers.ledger.views import connection_out, connection_rows_query, load_assessments, load_companies, sync_out
from workers.runtime.metrics import record_latency

log = logging.getLogger("synctrack.stream")

CATCH_UP_PAGE = 500  # missed changes read from Redis per XRANGE
SNAPSHOT_LIMIT = 10_000  # most connections (and active syncs) a snapshot lists; beyond it, `truncated` is true


def load_snapshot(
    engine: Engine, stream_filter: StreamFilter, freshness: FreshnessPolicy = DEFAULT_POLICY
) -> dict[str, Any]:
    """The filtered connections and active syncs as the JSON API shows them, and the companies they belong to."""
    connections = connection_rows_query().order_by(col(Connection.id)).limit(SNAPSHOT_LIMIT + 1)
    syncs = select(Sync).where(Sync.phase == "active")
    syncs = syncs.order_by(col(Sync.sort_at).desc(), col(Sync.id)).limit(SNAPSHOT_LIMIT + 1)
    if stream_filter.company_ids:
        connections = connections.where(col(Connection.company_id).in_(stream_filter.company_ids))
        syncs = syncs.where(col(Sync.company_id).in_(stream_filter.company_ids))
    if stream_filter.connection_ids:
        connections = connections.where(col(Connection.id).in_(stream_filter.connection_ids))
        syncs = syncs.where(col(Sync.connection_id).in_(stream_filter.connection_ids))
    with Session(engine) as session:
        connection_rows = session.exec(connections).all()
        sync_rows = session.exec(syncs).all()
        timings = load_timings(session, sync_rows[:SNAPSHOT_LIMIT])
        shown = connection_rows[:SNAPSHOT_LIMIT]
        active = {conn.id for conn, _, is_active in shown if is_active}
        assessed = load_assessments(session, [conn for conn, _, _ in shown], active, freshness, datetime.now(UTC))
        companies = load_companies(session, {*stream_filter.company_ids, *(conn.company_id for conn, _, _ in shown)})
    return {
        "companies": [company.model_dump(mode="json") for company in companies[:SNAPSHOT_LIMIT]],
        "connections": [
            connection_out(conn, name, bool(active), assessed[conn.id]).model_dump(mode="json")
            for conn, name, active in shown
        ],
        "syncs": [sync_out(row, timings.get(row.id)).model_dump(mode="json") for row in sync_rows[:SNAPSHOT_LIMIT]],
        "truncated": len(connection_rows) > SNAPSHOT_LIMIT or len(sync_rows) > SNAPSHOT_LIMIT,
        "event_id": None,
    }


async def events(
    fanout: Fanout,
    sub: Subscriber,
    engine: Engine,
    position: str,
    opening: str | None,
    freshness: FreshnessPolicy = DEFAULT_POLICY,
) -> AsyncGenerator[bytes, None]:
    """The event source of one client; `opening` is `snapshot`, a reset reason, or None to resume after
    `position`. Heartbeats come from the subscriber when the fan-out's watchdog says one is due."""
    try:
        if opening == "snapshot":
            limiter = fanout.snapshot_threads
            snapshot = await to_thread.run_sync(load_snapshot, engine, sub.filter, freshness, limiter=limiter)
            yield frame(position, "snapshot", snapshot)
        elif opening is not None:
            yield reset_frame(position, opening)
        else:
            async for page in catch_up(fanout, sub, position):
                yield page
        while (chunk := await sub.next_chunk()) is not None:
            yield chunk
        if sub.lost:
            yield reset_frame(fanout.position or position, sub.lost)
    finally:
        fanout.unsubscribe(sub)


async def catch_up(fanout: Fanout, sub: Subscriber, position: str) -> AsyncGenerator[bytes, None]:
    """The changes after `position` the client wants, one chunk per page read from Redis; each page read
    moves `sub.skip_through`, so the live changes buffered meanwhile are not sent twice."""
    more = True
    while more:
        try:
            async with fanout.redis_slots:
                entries: Any = await fanout.redis.xrange(fanout.key, f"({position}", "+", count=CATCH_UP_PAGE)
        except RedisError as exc:
            # Ending the stream is safe: the client reconnects with the last id it received.
            log.warning("msg=stream_catch_up_failed error=%r", f"{type(exc).__name__}: {exc}")
            sub.close()
            return
        changes, last = read_entries(entries)
        position, more = last or position, len(entries) == CATCH_UP_PAGE
        wanted = [change for change in changes if sub.filter.matches(change.company_id, change.connection_id)]
        page, _ = unsent(wanted, sub.skip_through)
        sub.skip_through = max(sub.skip_through, parse_id(position))
        if page:
            yield page
        if sub.lost == SLOW_CLIENT:
            # Dropped while catching up: those changes are still in Redis, read on.
            sub.restart()
            more = True
        elif sub.lost:
            return  # the client must reset (its token no longer holds, the feed was interrupted)


def server_exiting() -> bool:
    """True once uvicorn was told to stop (SIGTERM/SIGINT); False under a server that does not say.

    sse-starlette's `AppStatus` patch of uvicorn can come too late (uvicorn binds its signal handlers before it
    imports the app), so the handler itself, a bound method of the running server, is asked too."""
    if AppStatus.should_exit:
        return True
    handler = signal.getsignal(signal.SIGTERM)
    return bool(getattr(getattr(handler, "__self__", None), "should_exit", False))


HEADERS = [
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
"""sse-starlette's headers: no caching, no proxy buffering."""


@dataclass(slots=True)
class ChangeStreamResponse:
    """Sends each chunk of `content` as it comes; ends when the content ends, the client leaves, or the
    watchdog times out a send. The subscriber is let go as soon as the client is gone."""

    content: AsyncGenerator[bytes, None]
    sub: Subscriber
    fanout: Fanout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sub.task = asyncio.current_task()
        listener = asyncio.create_task(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            while scope["method"] != "HEAD" and await self._send_next(send):
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.sub.timed_out or task is None:
                raise
            task.uncancel()
            log.info("msg=stream_client_dropped reason=send_timeout")
        finally:
            listener.cancel()
            await self.content.aclose()
            self.fanout.unsubscribe(self.sub)

    async def _send_next(self, send: Send) -> bool:
        """Send the content's next chunk once it comes; False when the content is over. A chunk (the snapshot
        can be large) lives only as long as its send, not while the client waits for the next one."""
        chunk = await anext(self.content, None)
        if chunk is None:
            return False
        sub = self.sub
        sub.sending_since = asyncio.get_running_loop().time()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sub.last_sent, sub.sending_since = sub.sending_since, 0.0
        if sub.receipts:
            record_latency("delivered", sub.receipts)
            sub.receipts = []
        return True

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.fanout.unsubscribe(self.sub)
