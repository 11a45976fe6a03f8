"""`GET /v1/admin/missed`: the results reconciliation folded that no webhook had reported, newest found first."""

from __future__ import annotations

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import MissedWebhookOut
from service.api.reads import page_of, page_start
from service.common.pagination import time_param
from service.common.services import services
from workers.ledger.missed import missed_page


def list_missed(request: Request) -> JSONResponse:
    limit, after = page_start(request)
    since = time_param(request, "since")
    with Session(services(request).reads) as session:
        rows = missed_page(session, since, limit, after)
    out = MissedWebhookOut.model_validate
    return page_of(rows, limit, lambda row: out(row, from_attributes=True), "found_at", "dataset_id")


routes = [Route("/v1/admin/missed", list_missed)]
