"""`GET /v1/platforms/incidents`: the platforms' incidents, newest first (admins only).

Incidents are derived by the workers (`workers.ledger.platform_incidents`); this only reads them. Company tokens
never see them: a company hears of an incident as its own connections' health (`platform_incident`).
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import Page
from schemas.errors import ApiError, ErrorCode
from service.api.reads import time_cursor
from service.common.pagination import decode_cursor, encode_cursor, page_limit
from service.common.services import services
from workers.ledger.platform_incidents import incident_out
from workers.ledger.tables import PlatformIncident

STATUSES = ("open", "closed")


def list_incidents(request: Request) -> JSONResponse:
    limit = page_limit(request)
    cursor = decode_cursor(request, 2, ("time", "text"))
    status = request.query_params.get("status")
    query = select(PlatformIncident)
    if status == "open":
        query = query.where(col(PlatformIncident.closed_at).is_(None))
    elif status == "closed":
        query = query.where(col(PlatformIncident.closed_at).is_not(None))
    elif status is not None:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"status must be one of: {', '.join(STATUSES)}")
    if cursor:
        at = time_cursor(cursor[0])
        opened, ident = col(PlatformIncident.opened_at), col(PlatformIncident.id)
        query = query.where((opened < at) | ((opened == at) & (ident < cursor[1])))
    query = query.order_by(col(PlatformIncident.opened_at).desc(), col(PlatformIncident.id).desc()).limit(limit + 1)
    with Session(services(request).engine) as session:
        rows = session.exec(query).all()
    last = rows[limit - 1] if len(rows) > limit else None
    page = Page[Any](
        items=[incident_out(row) for row in rows[:limit]],
        next_cursor=encode_cursor(last.opened_at, last.id) if last else None,
    )
    return JSONResponse(page.model_dump(mode="json"))


routes = [Route("/v1/platforms/incidents", list_incidents)]
