"""`POST /v1/tokens` (admin only): mint a company-scoped token for a customer's browser session."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from schemas.tokens import TokenIn, TokenOut
from service.auth import principal_of
from service.outbound import read_model
from service.tokens import TokenConfigError, TokenSigner

log = logging.getLogger("synctrack.auth")


def mint(settings: Settings, company_id: str, rights: list[str], ttl_seconds: float) -> TokenOut:
    """Raises ApiError when the TTL is over the maximum or no signing key is configured."""
    if ttl_seconds > settings.token_max_ttl_seconds:
        raise ApiError(
            400,
            ErrorCode.INVALID_PARAMETER,
            f"ttl_seconds is at most {int(settings.token_max_ttl_seconds)} (SYNCTRACK_TOKEN_MAX_TTL)",
        )
    try:
        token, claims = TokenSigner(settings.token_signing_key).mint(company_id, rights, int(ttl_seconds), time.time())
    except TokenConfigError as exc:
        raise ApiError(409, ErrorCode.CONFLICT, str(exc)) from None
    return TokenOut(
        token=token,
        token_id=claims.token_id,
        company_id=company_id,
        rights=sorted(claims.rights),
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
    )


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
