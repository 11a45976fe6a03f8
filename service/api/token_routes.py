"""`POST /v1/tokens` (admin only): mint a company-scoped token for a customer's browser session."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.tokens import TokenIn
from service.common.json_body import read_model
from service.security.middleware import principal_of
from service.security.minting import mint

log = logging.getLogger("synctrack.auth")


async def create_token(request: Request) -> JSONResponse:
    body = await read_model(request, TokenIn)
    out = mint(request.app.state.settings, body.company_id, list(body.rights), body.ttl_seconds)
    log.info(
        "msg=token_minted token_id=%s company=%s rights=%s ttl=%d by=%s",
        out.token_id,
        out.company_id,
        ",".join(out.rights),
        body.ttl_seconds,
        principal_of(request).subject,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


routes = [Route("/v1/tokens", create_token, methods=["POST"])]
