"""`GET /v1/platforms/incidents`: the platforms' incidents (`workers.ledger.platform_incidents`), newest first,
for admins only: a company hears of one as its own connections' health."""

from __future__ import annotations

from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from service.api.reads import newest_first, page_of
from service.common.services import services
from workers.ledger.platform_incidents import incident_out
from workers.ledger.tables import PlatformIncident

STATUSES = ("open", "closed")


def list_incidents(request: Request) -> JSONResponse:
    query, limit = newest_first(request, select(PlatformIncident), PlatformIncident.opened_at, PlatformIncident.id)
    status = request.query_params.get("status")
    if status == "open":
        query = query.where(col(PlatformIncident.closed_at).is_(None))
    elif status == "closed":
        query = query.where(col(PlatformIncident.closed_at).is_not(None))
    elif status is not None:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"status must be one of: {', '.join(STATUSES)}")
    with Session(services(request).engine) as session:
        rows = session.exec(query).all()
    return page_of(rows, limit, incident_out, "opened_at", "id")


routes = [Route("/v1/platforms/incidents", list_incidents)]
