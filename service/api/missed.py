"""`GET /v1/admin/missed`: the results reconciliation folded that no webhook had reported, newest found first.

`since` keeps those found at or after a time; pages are keyset-paged like the other lists. The records
(`workers.ledger.missed`) are never removed: a webhook arriving later does not un-miss one.
"""

from __future__ import annotations

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import MissedWebhookOut
from service.api.reads import engine_of, page_response, time_cursor
from service.common.pagination import decode_cursor, encode_cursor, page_limit, time_param
from workers.ledger.missed import missed_page


def list_missed(request: Request) -> JSONResponse:
    limit = page_limit(request)
    since = time_param(request, "since")
    cursor = decode_cursor(request, 2, ("time", "text"))
    after = (time_cursor(cursor[0]), str(cursor[1])) if cursor else None
    with Session(engine_of(request)) as session:
        rows = missed_page(session, since, limit, after)
    items = [MissedWebhookOut.model_validate(row, from_attributes=True) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return page_response(items, encode_cursor(last.found_at, last.dataset_id) if last else None)


routes = [Route("/v1/admin/missed", list_missed)]
