"""`GET /v1/stream`: the change feed as server-sent events, resumable with `Last-Event-ID`.

Every event's ``id:`` is the Redis Stream entry id of the change (for `snapshot` and `reset`: the
stream's position at that moment), so a reconnecting client resumes exactly where it stopped.
A connection goes through three steps:

1. subscribe to this process's `Fanout` *first*: from here on nothing published can be missed;
2. open with one of
   * ``snapshot`` (no Last-Event-ID): the stream's position is read, then the ledger (a change is in
     the database before it is in the stream, so the snapshot holds at least every change up to that
     position);
   * the missed changes, read from Redis (XRANGE after the given id) page by page;
   * ``reset`` when the id is malformed, unknown or trimmed away by retention: re-read the state
     from the JSON API, live changes follow;
3. live: what the fan-out buffered for the client, skipping every id at or before the last one sent
   (buffer and catch-up overlap; there is never a gap between them).

A client too slow for its bounded buffer gets ``reset`` and is disconnected, as is one whose company token is
revoked or expires (`service/stream/fanout.py` watches both); `service/stream/response.py` writes the events
to the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from functools import partial
from typing import Any

from anyio import to_thread
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from service.common.pagination import list_param
from service.common.services import services
from service.security.middleware import principal_of
from service.security.scope import company_filter
from service.stream.client import SLOW_CLIENT, STREAM_ID, StreamChange, StreamFilter, Subscriber, parse_id, unsent
from service.stream.fanout import Fanout
from service.stream.frames import frame, reset_frame
from service.stream.response import ChangeStreamResponse
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.tables import Connection, Sync
from workers.ledger.views import connection_out, connection_rows_query, load_companies, load_freshness, sync_out

log = logging.getLogger("synctrack.stream")

CATCH_UP_PAGE = 500
"""Missed changes read from Redis per XRANGE."""
SNAPSHOT_LIMIT = 10_000
"""Most connections (and active syncs) a snapshot lists; beyond it, `truncated` is true."""
STREAM_PATH = "/v1/stream"


def load_snapshot(
    engine: Engine, stream_filter: StreamFilter, freshness: FreshnessPolicy = DEFAULT_POLICY
) -> dict[str, Any]:
    """The filtered connections and active syncs, as the JSON API shows them (freshness judged now), and the
    companies they belong to (with `deleted_at`)."""
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
        shown = connection_rows[:SNAPSHOT_LIMIT]
        fresh = load_freshness(session, [conn for conn, _, _ in shown], freshness, datetime.now(UTC))
        companies = load_companies(session, {*stream_filter.company_ids, *(conn.company_id for conn, _, _ in shown)})
    return {
        "companies": [company.model_dump(mode="json") for company in companies[:SNAPSHOT_LIMIT]],
        "connections": [
            connection_out(conn, name, bool(active), fresh[conn.id]).model_dump(mode="json")
            for conn, name, active in shown
        ],
        "syncs": [sync_out(row).model_dump(mode="json") for row in sync_rows[:SNAPSHOT_LIMIT]],
        "truncated": len(connection_rows) > SNAPSHOT_LIMIT or len(sync_rows) > SNAPSHOT_LIMIT,
        "event_id": None,
    }


async def resume_point(fanout: Fanout, last_event_id: str) -> str | None:
    """Where a client that last saw `last_event_id` resumes; None when it must reset.

    An id resumes when it is still in the stream (trimming only removes the oldest entries, so every
    later one is there too), or is the stream's newest id, or is ``0-0`` on a stream never trimmed
    (a snapshot of an empty stream). Anything else may hide a gap.
    """
    if not STREAM_ID.fullmatch(last_event_id):
        return None
    if await fanout.redis.xrange(fanout.key, last_event_id, last_event_id, count=1):
        return last_event_id
    try:
        info = await fanout.redis.xinfo_stream(fanout.key)
    except ResponseError:  # no stream yet
        return last_event_id if last_event_id == "0-0" else None
    newest = info["last-generated-id"]
    if last_event_id == (newest.decode() if isinstance(newest, bytes) else str(newest)):
        return last_event_id
    if last_event_id == "0-0" and info.get("entries-added") == info.get("length"):
        return last_event_id
    return None


async def read_after(fanout: Fanout, position: str) -> tuple[list[StreamChange], str, bool]:
    """One page of changes after `position`: (changes, new position, whether more may follow)."""
    entries: Any = await fanout.redis.xrange(fanout.key, f"({position}", "+", count=CATCH_UP_PAGE)
    changes = []
    for entry_id, fields in entries:
        position = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        change = StreamChange.from_entry(entry_id, fields)
        if change is not None:
            changes.append(change)
    return changes, position, len(entries) == CATCH_UP_PAGE


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
            yield frame(
                position,
                "snapshot",
                await to_thread.run_sync(load_snapshot, engine, sub.filter, freshness, limiter=limiter),
            )
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
                changes, position, more = await read_after(fanout, position)
        except RedisError as exc:
            # Ending the stream is safe: the client reconnects with the last id it received.
            log.warning("msg=stream_catch_up_failed error=%r", f"{type(exc).__name__}: {exc}")
            sub.close()
            return
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


async def stream(request: Request) -> ChangeStreamResponse:
    """Open one client's stream; raises StreamUnavailable (503) while the change feed is out of reach."""
    fanout = services(request).get(Fanout)
    stream_filter = StreamFilter.of(company_filter(request), list_param(request, "connection_id"))
    # The header wins: a browser resending it after a reconnect knows more than the URL it started with.
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    caller = principal_of(request)
    # A company token's stream lives no longer than the token: the fan-out ends it on revocation or expiry.
    sub = fanout.subscribe(stream_filter, caller.token_id, caller.expires_at)  # StreamUnavailable: 503
    opening: str | None
    try:
        if last_event_id is None:
            async with fanout.redis_slots:
                position, opening = await fanout.tail(), "snapshot"
        else:
            async with fanout.redis_slots:
                point = await resume_point(fanout, last_event_id.strip())
                position, opening = (point, None) if point else (await fanout.tail(), "last_event_id_not_found")
    except RedisError as exc:
        fanout.unsubscribe(sub)
        log.warning("msg=stream_unavailable error=%r", f"{type(exc).__name__}: {exc}")
        raise unavailable() from None
    if opening is not None:
        # The opening event covers everything up to `position`: none of it needs buffering.
        sub.skip_through = parse_id(position)
    log.info(
        "msg=stream_open companies=%d connections=%d opening=%s position=%s clients=%d",
        len(stream_filter.company_ids),
        len(stream_filter.connection_ids),
        opening or "resume",
        position,
        fanout.subscriber_count,
    )
    return ChangeStreamResponse(
        events(fanout, sub, services(request).reads, position, opening, services(request).freshness),
        sub=sub,
        release=partial(fanout.unsubscribe, sub),
    )


def unavailable() -> ApiError:
    return ApiError(
        503, ErrorCode.STREAM_UNAVAILABLE, "the change feed (Redis) is not reachable", headers={"Retry-After": "1"}
    )


async def stream_status(request: Request) -> JSONResponse:
    """This process's share of the stream: connected clients, buffered changes, the reader. `written_directly`
    and `parked` are kept for the clients that read them: always 0, every change is written by its client's
    own request."""
    fanout = services(request).get(Fanout)
    return JSONResponse(
        {
            "clients": fanout.subscriber_count,
            "buffered": fanout.buffered,
            "overflows": fanout.overflows,
            "written_directly": 0,
            "parked": 0,
            "reader": "running" if fanout.running else "stopped",
            "position": fanout.position,
            "tasks": len(asyncio.all_tasks()),
        }
    )


routes = [
    Route(STREAM_PATH, stream, methods=["GET"]),
    Route("/v1/stream/status", stream_status, methods=["GET"]),
]
