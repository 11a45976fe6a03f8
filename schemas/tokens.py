"""`POST /v1/tokens`: what a product backend sends to mint a company-scoped token, and what it gets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.api import ApiModel, RequestBody, UtcTime
from schemas.ids import CodatId

Right = Literal["read", "refresh", "disconnect", "delete", "reconnect"]


class TokenIn(RequestBody):
    company_id: CodatId
    """One company id (letters, digits, `-`, `_`, `.`; at most 128 characters)."""
    rights: list[Right] = Field(default=["read"], min_length=1)
    """`read` (the company's connections, syncs, events, audit and stream), `refresh`, `disconnect`
    (unlink a connection), `delete` (delete a connection), `reconnect` (ask Codat for a fresh link URL)."""
    ttl_seconds: int = Field(default=3600, ge=60)
    """Lifetime; at most `SYNCTRACK_TOKEN_MAX_TTL` (7 days by default)."""


class TokenOut(ApiModel):
    token: str
    """Send as `Authorization: Bearer <token>` (or `?access_token=` on the stream, when enabled)."""
    token_id: str
    company_id: str
    rights: list[Right]
    expires_at: UtcTime


class RevokedOut(ApiModel):
    """`POST /v1/tokens/{token_id}/revoke`: the token answers 401 from now on, in every web process."""

    token_id: str
    company_id: str | None
    """The token's company when it was minted through `POST /v1/tokens`; null when Synctrack cannot know."""
    revoked_at: UtcTime
    revoked_by: str
    """The admin's token subject (`admin:<first 8 hex of its hash>`), as the audit log records it."""
    kept_until: UtcTime
    """The revocation is kept until then: the token's expiry (or the longest a token can live)."""
