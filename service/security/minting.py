"""Minting a company-scoped token: the one function behind `POST /v1/tokens` and `synctrack token mint`."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from schemas.tokens import TokenOut
from service.security.tokens import TokenConfigError, TokenSigner


def mint(settings: Settings, company_id: str, rights: list[str], ttl_seconds: float) -> TokenOut:
    """Raises ApiError when the TTL is over the maximum, the company id or a right is not valid (400), or no
    signing key is configured (409)."""
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
    except ValueError as exc:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, str(exc)) from None
    return TokenOut(
        token=token,
        token_id=claims.token_id,
        company_id=company_id,
        rights=sorted(claims.rights),
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
    )
