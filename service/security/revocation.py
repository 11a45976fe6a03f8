"""Company tokens revoked one by one: a list in Redis every web process reads, kept until the token expires.

A revoked token gets 401 from every web process, and the fan-out ends its open streams (`revoked_among`); while
the list cannot be read a company-token request gets 503. The expiry is known for tokens minted through
`POST /v1/tokens`; any other is kept on the list for `SYNCTRACK_TOKEN_MAX_TTL`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.errors import ApiError, ErrorCode

READ_BATCH = 500  # tokens looked up per MGET


@dataclass(frozen=True)
class Revocation:
    token_id: str
    company_id: str | None  # known when the token was minted through the API
    kept_until: int  # unix seconds: the token's expiry (or the longest it could live)


class RevocationList:
    def __init__(self, redis: Redis, namespace: str, max_ttl_seconds: float) -> None:
        self.redis = redis
        self.namespace = namespace
        self.max_ttl_seconds = int(max_ttl_seconds)

    def key(self, kind: str, token_id: str) -> str:
        """`kind` is ``revoked`` (the list) or ``minted`` (a minted token's company and expiry)."""
        return f"{self.namespace}:{kind}-token:{token_id}"

    async def remember_minted(self, token_id: str, company_id: str, expires_at: int) -> None:
        """Note a minted token's company and expiry, until it expires (so a revocation knows both)."""
        ttl = max(1, expires_at - int(time.time()))
        value = json.dumps({"company_id": company_id, "exp": expires_at})
        await self.redis.set(self.key("minted", token_id), value, ex=ttl)

    async def revoke(self, token_id: str, by: str) -> Revocation:
        """Put `token_id` on the list until its expiry. Raises ApiError 503 when Redis cannot be reached."""
        now = int(time.time())
        try:
            raw = await self.redis.get(self.key("minted", token_id))
            minted = json.loads(raw) if raw else {}
            until = int(minted.get("exp", now + self.max_ttl_seconds))
            record = json.dumps({"by": by, "at": now})
            await self.redis.set(self.key("revoked", token_id), record, ex=max(1, until - now))
        except RedisError:
            raise unavailable() from None
        return Revocation(token_id, minted.get("company_id"), until)

    async def is_revoked(self, token_id: str) -> bool:
        """Raises ApiError 503 when the list cannot be read (a revoked token must not slip through)."""
        try:
            return bool(await self.redis.exists(self.key("revoked", token_id)))
        except RedisError:
            raise unavailable() from None

    async def revoked_among(self, token_ids: Sequence[str]) -> set[str]:
        """Which of `token_ids` are revoked now, a few hundred per round trip. Raises RedisError when the
        list cannot be read: the caller decides what an unknown answer means for it."""
        found: set[str] = set()
        for start in range(0, len(token_ids), READ_BATCH):
            batch = token_ids[start : start + READ_BATCH]
            values = await self.redis.mget([self.key("revoked", token_id) for token_id in batch])
            found.update(token_id for token_id, value in zip(batch, values, strict=True) if value is not None)
        return found


def unavailable() -> ApiError:
    return ApiError(
        503, ErrorCode.NOT_READY, "the token revocation list cannot be read; retry later", headers={"Retry-After": "5"}
    )
