"""`service/api/action_limit.py`: the per-company count of actions, on `synctrack dev`'s in-process Redis and
on a Redis that cannot be reached."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis.asyncio

from schemas.errors import ApiError
from service.api.action_limit import ActionLimit


def takes(limit: ActionLimit, company_id: str, count: int) -> list[int | None]:
    async def run() -> list[int | None]:
        return [await limit.take(company_id) for _ in range(count)]

    return asyncio.run(run())


def test_the_in_process_redis_of_synctrack_dev_counts_each_company_apart() -> None:
    limit = ActionLimit(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), "dev", 3)
    first = takes(limit, "company-a", 5)
    assert first[:3] == [None] * 3
    assert all(wait is not None and 58 <= wait <= 60 for wait in first[3:])
    assert takes(limit, "company-b", 1) == [None]


def test_zero_means_no_limit() -> None:
    limit = ActionLimit(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()), "dev", 0)
    assert takes(limit, "company-a", 50) == [None] * 50


def test_an_unreachable_redis_refuses_the_action_rather_than_skip_the_limit() -> None:
    unreachable = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    with pytest.raises(ApiError) as refused:
        takes(ActionLimit(unreachable, "ns", 10), "company-a", 1)
    assert (refused.value.status, refused.value.headers) == (503, {"Retry-After": "5"})
