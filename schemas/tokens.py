"""`POST /v1/tokens`: what a product backend sends to mint a company-scoped token, and what it gets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.api import UtcTime
from schemas.ids import CodatId

Right = Literal["read", "refresh", "disconnect", "delete"]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company_id: CodatId
    """One company id (letters, digits, `-`, `_`, `.`; at most 128 characters)."""
    rights: list[Right] = Field(default=["read"], min_length=1)
    """`read` (the company's connections, syncs, events, audit and stream), `refresh`, `disconnect`
    (unlink a connection), `delete` (delete a connection)."""
    ttl_seconds: int = Field(default=3600, ge=60)
    """Lifetime; at most `SYNCTRACK_TOKEN_MAX_TTL` (7 days by default)."""


class TokenOut(BaseModel):
    token: str
    """Send as `Authorization: Bearer <token>` (or `?access_token=` on the stream, when enabled)."""
    token_id: str
    company_id: str
    rights: list[Right]
    expires_at: UtcTime
