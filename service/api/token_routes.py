"""`POST /v1/tokens` (admin only): mint a company-scoped token for a customer's browser session;
`POST /v1/tokens/{token_id}/revoke` (admin only): refuse it from now on, in every web process."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.ids import is_valid_id
from schemas.tokens import RevokedOut, TokenIn
from service.common.json_body import read_model
from service.common.services import services
from service.security.middleware import principal_of
from service.security.revocation import RevocationList
from service.security.tokens import mint
from workers.ledger.audit import new_record

log = logging.getLogger("synctrack.auth")


async def create_token(request: Request) -> JSONResponse:
    body = await read_model(request, TokenIn)
    out = mint(services(request).settings, body.company_id, list(body.rights), body.ttl_seconds)
    revocations = services(request).get(RevocationList)
    await revocations.remember_minted(out.token_id, out.company_id, int(out.expires_at.timestamp()))
    log.info(
        "msg=token_minted token_id=%s company=%s rights=%s ttl=%d by=%s",
        out.token_id,
        out.company_id,
        ",".join(out.rights),
        body.ttl_seconds,
        principal_of(request).subject,
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


async def revoke_token(request: Request) -> JSONResponse:
    token_id = request.path_params["token_id"]
    if not is_valid_id(token_id):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "token_id is the token_id a mint answered with")
    by = principal_of(request).subject
    done = await services(request).get(RevocationList).revoke(token_id, by)
    at = datetime.now(UTC)
    kept_until = datetime.fromtimestamp(done.kept_until, UTC)

    def audit() -> None:
        with Session(services(request).engine) as session, session.begin():
            new_record(
                session,
                action="revoke_token",
                actor=by,
                at=at,
                company_id=done.company_id or "",
                connection_id=None,
                data_type=None,
                result="accepted",
                codat_status=None,
                detail=f"token {token_id} revoked until {kept_until.isoformat()}",
            )

    await run_in_threadpool(audit)
    log.info("msg=token_revoked token_id=%s company=%s by=%s", token_id, done.company_id, by)
    out = RevokedOut(token_id=token_id, company_id=done.company_id, revoked_at=at, revoked_by=by, kept_until=kept_until)
    return JSONResponse(out.model_dump(mode="json"))


routes = [
    Route("/v1/tokens", create_token, methods=["POST"]),
    Route("/v1/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
]
