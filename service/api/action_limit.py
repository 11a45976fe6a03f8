"""How many actions one company's tokens may take against Codat: `SYNCTRACK_ACTIONS_PER_MINUTE` a minute, so a
customer's browser session cannot spend the account's one Codat quota. A sliding window in Redis, shared by
every web process: the sorted set ``{namespace}:actions:{company_id}``, one member per action let through."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.errors import ApiError, ErrorCode

WINDOW_MS = 60_000

TAKE = """
local now = redis.call('TIME')
local at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], at, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return -1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - at
"""
"""Trim, count and add in one step, so concurrent requests never let more through than the limit: -1 lets one
action through, else the ms until the oldest counted one leaves the window (by Redis's clock)."""


class ActionLimit:
    """`per_minute` actions per company, shared by every web process; 0 means no limit."""

    def __init__(self, redis: Redis, namespace: str, per_minute: int) -> None:
        self.namespace = namespace
        self.per_minute = per_minute
        self._take = redis.register_script(TAKE)

    async def take(self, company_id: str) -> int | None:
        """Count one action of `company_id`'s tokens: None when it may go ahead, else the whole seconds until
        one may (for `Retry-After`). Raises ApiError 503 when Redis cannot be reached: the limit is never
        skipped."""
        if self.per_minute <= 0:
            return None
        try:
            wait_ms = int(
                await self._take(
                    keys=[f"{self.namespace}:actions:{company_id}"],
                    args=[WINDOW_MS, self.per_minute, uuid.uuid4().hex],
                )
            )
        except RedisError:
            raise ApiError(
                503, ErrorCode.NOT_READY, "the action limit cannot be read; retry later", headers={"Retry-After": "5"}
            ) from None
        return None if wait_ms < 0 else max(1, -(-wait_ms // 1000))
