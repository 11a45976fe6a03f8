"""`GET /v1/connections/{connection_id}/timeline`: what happened to a connection, newest first
(`workers.ledger.timeline`)."""

from __future__ import annotations

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.api.reads import not_found, page_response, page_start
from service.common.pagination import encode_cursor
from service.common.services import services
from workers.ledger.tables import Connection
from workers.ledger.timeline import load_timeline


def connection_timeline(request: Request) -> JSONResponse:
    connection_id = request.path_params["connection_id"]
    limit, after = page_start(request)
    with Session(services(request).reads) as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            raise not_found("connection", connection_id)
        items, last = load_timeline(session, connection, limit, after)
    return page_response(items, encode_cursor(*last) if last else None)


routes = [Route("/v1/connections/{connection_id}/timeline", connection_timeline)]
