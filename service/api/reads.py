"""The read side of the JSON API (v1): companies, connections, syncs, stored events, and the keyset paging
the other lists share. Handlers are plain functions, run in Starlette's thread pool."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import or_
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import EventDetail, EventOut, Page
from schemas.errors import ApiError, ErrorCode
from schemas.events import parse_time
from schemas.statuses import FRESHNESS, HEALTH, PHASES
from service.common.pagination import decode_cursor, encode_cursor, list_param, page_limit, time_param
from service.common.services import services
from service.security.middleware import company_filter
from workers.ledger.durations import load_timings
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.tables import Company, Connection, FreshnessRecord, Sync, WebhookEvent
from workers.ledger.views import (
    Assessment,
    company_out,
    company_rows_query,
    connection_out,
    connection_rows_query,
    load_assessments,
    load_connection_detail,
    sync_out,
)

T = TypeVar("T")

SCAN_CHUNK = 500
"""Connections read per statement while `GET /v1/connections` filters by freshness."""


def page_response(items: list[Any], next_cursor: str | None) -> JSONResponse:
    return JSONResponse(Page[Any](items=items, next_cursor=next_cursor).model_dump(mode="json"))


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"no {kind} with id {ident!r}")


def bool_param(request: Request, name: str) -> bool | None:
    """`?{name}=true|false` (any case); None when absent, 400 `invalid_parameter` for anything else."""
    value = request.query_params.get(name)
    if value is not None and value.lower() not in ("true", "false"):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{name}={value!r}: give true or false")
    return None if value is None else value.lower() == "true"


def list_companies(request: Request) -> JSONResponse:
    limit = page_limit(request)
    cursor = decode_cursor(request, 1, ("text",))
    query = company_rows_query().limit(limit + 1)
    if cursor:
        query = query.where(col(Company.id) > cursor[0])
    with Session(services(request).reads) as session:
        rows = session.exec(query).all()
    items = [company_out(c, n) for c, n in rows[:limit]]
    return page_response(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


def list_connections(request: Request) -> JSONResponse:
    company_id = request.path_params["company_id"]
    limit = page_limit(request)
    cursor = decode_cursor(request, 1, ("text",))
    query = connection_rows_query().where(Connection.company_id == company_id).order_by(col(Connection.id))
    if cursor:
        query = query.where(col(Connection.id) > cursor[0])
    with Session(services(request).reads) as session:
        if session.get(Company, company_id) is None:
            raise not_found("company", company_id)
        rows = session.exec(query.limit(limit + 1)).all()
        assessed = assess_rows(session, rows[:limit], services(request).freshness, datetime.now(UTC))
    items = [connection_out(conn, name, bool(active), assessed[conn.id]) for conn, name, active in rows[:limit]]
    return page_response(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


def assess_rows(
    session: Session, rows: Sequence[tuple[Connection, str | None, bool]], policy: FreshnessPolicy, now: datetime
) -> dict[str, Assessment]:
    """The assessments of listed connection rows (`connection_rows_query`: connection, company name, active)."""
    active = {conn.id for conn, _, is_active in rows if is_active}
    return load_assessments(session, [conn for conn, _, _ in rows], active, policy, now)


def list_all_connections(request: Request) -> JSONResponse:
    """`GET /v1/connections?freshness=&health=&company_id=&source_type=`: connections across companies, by id,
    filtered on freshness and health computed now. Only connections whose recorded freshness matches, or whose
    recorded deadline has passed, can match."""
    limit = page_limit(request)
    cursor = decode_cursor(request, 1, ("text",))
    wanted = list_param(request, "freshness")
    if unknown := sorted(set(wanted) - set(FRESHNESS)):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"unknown freshness {unknown}; known: {', '.join(FRESHNESS)}")
    healths = list_param(request, "health")
    if unknown := sorted(set(healths) - set(HEALTH)):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"unknown health {unknown}; known: {', '.join(HEALTH)}")
    now = datetime.now(UTC)
    query = connection_rows_query()
    if company_ids := company_filter(request):
        query = query.where(col(Connection.company_id).in_(company_ids))
    if source_types := list_param(request, "source_type"):
        query = query.where(col(Connection.source_type).in_(source_types))
    if wanted:
        record = FreshnessRecord
        query = query.join(record, col(record.connection_id) == Connection.id, isouter=True).where(
            or_(
                col(record.connection_id).is_(None),
                col(record.freshness).in_(wanted),
                col(record.expected_by) <= now,
            )
        )
    query = query.order_by(col(Connection.id))
    after = str(cursor[0]) if cursor else None
    items: list[Any] = []
    more = False
    with Session(services(request).reads) as session:
        while not more:
            chunk = query.where(col(Connection.id) > after) if after is not None else query
            rows = session.exec(chunk.limit(SCAN_CHUNK)).all()
            assessed = assess_rows(session, rows, services(request).freshness, now)
            for conn, name, active in rows:
                judged = assessed[conn.id]
                if wanted and judged.freshness.freshness not in wanted:
                    continue
                if healths and judged.health.health not in healths:
                    continue
                if len(items) == limit:
                    more = True
                    break
                items.append(connection_out(conn, name, bool(active), judged))
            if len(rows) < SCAN_CHUNK:
                break
            after = rows[-1][0].id
    return page_response(items, encode_cursor(items[-1].id) if more else None)


def get_connection(request: Request) -> JSONResponse:
    connection_id = request.path_params["connection_id"]
    with Session(services(request).reads) as session:
        detail = load_connection_detail(session, connection_id, services(request).freshness, datetime.now(UTC))
    if detail is None:
        raise not_found("connection", connection_id)
    return JSONResponse(detail.model_dump(mode="json"))


def _sync_page(request: Request, query: SelectOfScalar[Sync], connection_id: str | None = None) -> JSONResponse:
    """Syncs newest first; 404 when `connection_id` names no connection."""
    query, limit = newest_first(request, query, Sync.sort_at, Sync.id)
    with Session(services(request).reads) as session:
        if connection_id is not None and session.get(Connection, connection_id) is None:
            raise not_found("connection", connection_id)
        rows = session.exec(query).all()
        timings = load_timings(session, rows[:limit])
    return page_of(rows, limit, lambda row: sync_out(row, timings.get(row.id)), "sort_at", "id")


def list_syncs(request: Request) -> JSONResponse:
    connection_id = request.path_params["connection_id"]
    query = select(Sync).where(Sync.connection_id == connection_id)
    if data_type := request.query_params.get("data_type"):
        query = query.where(Sync.data_type == data_type)
    if phase := request.query_params.get("phase"):
        if phase not in PHASES:
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"phase must be one of {', '.join(PHASES)}")
        query = query.where(Sync.phase == phase)
    return _sync_page(request, query, connection_id)


def list_active_syncs(request: Request) -> JSONResponse:
    query = select(Sync).where(Sync.phase == "active")
    if company_ids := company_filter(request):
        query = query.where(col(Sync.company_id).in_(company_ids))
    if connection_ids := list_param(request, "connection_id"):
        query = query.where(col(Sync.connection_id).in_(connection_ids))
    return _sync_page(request, query)


def page_start(request: Request) -> tuple[int, tuple[datetime, str] | None]:
    """The page's `limit` and the (time, id) its cursor names, for lists kept newest first."""
    limit = page_limit(request)
    cursor = decode_cursor(request, 2, ("time", "text"))
    return limit, (parse_time(cursor[0]), str(cursor[1])) if cursor else None


def newest_first(request: Request, query: SelectOfScalar[T], at: Any, ident: Any) -> tuple[SelectOfScalar[T], int]:
    """`query` ordered by (`at`, `ident`) newest first, past the request's cursor, one row over its `limit`."""
    limit, after = page_start(request)
    if after:
        query = query.where((col(at) < after[0]) | ((col(at) == after[0]) & (col(ident) < after[1])))
    return query.order_by(col(at).desc(), col(ident).desc()).limit(limit + 1), limit


def page_of(rows: Sequence[Any], limit: int, out: Callable[[Any], Any], *key: str) -> JSONResponse:
    """The first `limit` rows through `out`; when more follow, the cursor holds the last one's `key` attributes."""
    last = rows[limit - 1] if len(rows) > limit else None
    cursor = encode_cursor(*(getattr(last, name) for name in key)) if last else None
    return page_response([out(row) for row in rows[:limit]], cursor)


class EventDetailResponse(JSONResponse):
    """`GET /v1/events/{id}`'s answer: a body holding a lone UTF-16 surrogate, which UTF-8 cannot encode, is
    sent with every non-ASCII character escaped, as JSON allows."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


def event_out(row: WebhookEvent) -> EventOut:
    return EventOut.model_validate(row, from_attributes=True)


def list_events(request: Request) -> JSONResponse:
    query, limit = newest_first(request, select(WebhookEvent), WebhookEvent.received_at, WebhookEvent.id)
    if company_ids := company_filter(request):
        query = query.where(col(WebhookEvent.company_id).in_(company_ids))
    for name in ("connection_id", "event_type", "outcome"):
        if values := list_param(request, name):
            query = query.where(col(getattr(WebhookEvent, name)).in_(values))
    if since := time_param(request, "since"):
        query = query.where(col(WebhookEvent.received_at) >= since)
    if until := time_param(request, "until"):
        query = query.where(col(WebhookEvent.received_at) < until)
    with Session(services(request).reads) as session:
        rows = session.exec(query).all()
    return page_of(rows, limit, event_out, "received_at", "id")


def get_event(request: Request) -> JSONResponse:
    event_id = request.path_params["event_id"]
    with Session(services(request).reads) as session:
        row = session.get(WebhookEvent, event_id)
    if row is None:
        raise not_found("event", event_id)
    body: Any = None
    if row.body is not None:
        try:
            body = json.loads(row.body)
        except ValueError:
            body = row.body
    detail = EventDetail(**event_out(row).model_dump(), body=body)
    return EventDetailResponse(detail.model_dump(mode="json"))


routes = [
    Route("/v1/companies", list_companies),
    Route("/v1/companies/{company_id}/connections", list_connections),
    Route("/v1/connections", list_all_connections),
    Route("/v1/connections/{connection_id}", get_connection),
    Route("/v1/connections/{connection_id}/syncs", list_syncs),
    Route("/v1/syncs/active", list_active_syncs),
    Route("/v1/events", list_events),
    Route("/v1/events/{event_id}", get_event),
]
