"""`GET /v1/stream`: the change feed as server-sent events, resumable with `Last-Event-ID`.

Every event's ``id:`` is a Redis Stream entry id (for `snapshot` and `reset`: the stream's position then). The
client subscribes to the `Fanout` *first*, so nothing published afterwards is missed, then gets its opening.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from service.common.pagination import list_param
from service.common.services import services
from service.security.middleware import company_filter, principal_of
from service.stream.fanout import Fanout
from service.stream.response import ChangeStreamResponse, events
from service.stream.subscriber import StreamFilter, parse_id

log = logging.getLogger("synctrack.stream")

STREAM_PATH = "/v1/stream"


async def stream(request: Request) -> ChangeStreamResponse:
    """Open one client's stream: ``snapshot`` without Last-Event-ID (the position is read before the ledger, where a
    change lands first), the missed changes when the id is still in the stream, else ``reset``. 503 while the
    change feed is out of reach."""
    fanout = services(request).get(Fanout)
    stream_filter = StreamFilter(frozenset(company_filter(request)), frozenset(list_param(request, "connection_id")))
    # The header wins: a browser resending it after a reconnect knows more than the URL it started with.
    last_event_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    caller = principal_of(request)
    # A company token's stream lives no longer than the token: the fan-out ends it on revocation or expiry.
    sub = fanout.subscribe(stream_filter, caller.token_id, caller.expires_at)  # StreamUnavailable: 503
    try:
        async with fanout.redis_slots:
            point = None if last_event_id is None else await fanout.resume_point(last_event_id.strip())
            position = point or await fanout.tail()
    except RedisError as exc:
        fanout.unsubscribe(sub)
        log.warning("msg=stream_unavailable error=%r", f"{type(exc).__name__}: {exc}")
        raise unavailable() from None
    opening = None if point else "snapshot" if last_event_id is None else "last_event_id_not_found"
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
    content = events(fanout, sub, services(request).reads, position, opening, services(request).freshness)
    return ChangeStreamResponse(content, sub=sub, fanout=fanout)


def unavailable() -> ApiError:
    return ApiError(
        503, ErrorCode.STREAM_UNAVAILABLE, "the change feed (Redis) is not reachable", headers={"Retry-After": "1"}
    )


async def stream_status(request: Request) -> JSONResponse:
    """This process's share of the stream. `written_directly` and `parked` are always 0, kept for their readers."""
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
