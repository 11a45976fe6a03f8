"""Codat's `X-Rate-Limit-*` quota: calls wait for the reset once it is spent, or fail at once when the reset is too
far away to wait for."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from workers.codat.errors import CodatError, reset_delay
from workers.codat.quota import QuotaGate

NOW = 1_800_000_000.0


def answer(remaining: int, reset: str) -> httpx.Response:
    headers = {"X-Rate-Limit-Limit": "1000", "X-Rate-Limit-Remaining": str(remaining), "X-Rate-Limit-Reset": reset}
    return httpx.Response(200, headers=headers)


def gate(max_wait: float = 30) -> tuple[QuotaGate, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return QuotaGate(max_wait, clock=lambda: NOW, sleep=sleep), slept


@pytest.mark.parametrize(
    "value, seconds",
    [(str(int(NOW + 12)), 12.0), ("7", 7.0), ("2027-01-15T08:00:12Z", None), ("soon", None)],
)
def test_the_reset_is_read_as_a_unix_time_seconds_or_a_date(value: str, seconds: float | None) -> None:
    delay = reset_delay(value, NOW)
    if value.startswith("2027"):
        assert delay is not None and delay > 0
    else:
        assert delay == seconds


def test_calls_go_at_once_while_requests_remain_and_each_reserves_one() -> None:
    quota, slept = gate()
    quota.note(answer(2, str(int(NOW + 5))))
    asyncio.run(quota.wait())
    asyncio.run(quota.wait())
    assert slept == [] and quota.remaining == 0
    asyncio.run(quota.wait())  # the third would overrun: it waits for the reset
    assert slept == [5.0]


def test_a_spent_quota_waits_until_the_reset() -> None:
    quota, slept = gate()
    quota.note(answer(0, str(int(NOW + 9))))
    asyncio.run(quota.wait())
    assert slept == [9.0]
    asyncio.run(quota.wait())  # a new window: its answers will say what is left
    assert slept == [9.0]


def test_a_reset_further_than_the_longest_wait_fails_at_once_with_retry_after() -> None:
    quota, slept = gate(max_wait=30)
    quota.note(answer(0, str(int(NOW + 3600))))
    with pytest.raises(CodatError) as raised:
        asyncio.run(quota.wait())
    assert (raised.value.status, raised.value.code.value, raised.value.headers) == (
        503,
        "codat_unavailable",
        {"Retry-After": "3600"},
    )
    assert slept == []


def test_answers_arriving_out_of_order_never_raise_the_count_within_a_window() -> None:
    quota, _ = gate()
    reset = str(int(NOW + 60))
    quota.note(answer(3, reset))
    quota.note(answer(5, reset))  # an older request answered later
    assert quota.remaining == 3
    quota.note(answer(900, str(int(NOW + 86_400))))  # a new window
    assert quota.remaining == 900


def test_calls_sent_while_the_count_was_unknown_are_taken_off_the_first_count() -> None:
    quota, slept = gate()
    for _ in range(3):  # three calls at once, before any answer said what is left
        asyncio.run(quota.wait())
    quota.note(answer(5, str(int(NOW + 5))))  # the first answer may not have counted the other two
    assert quota.remaining == 2
    quota.note(answer(3, str(int(NOW + 5))))
    assert quota.remaining == 2
    for _ in range(2):
        asyncio.run(quota.wait())
    assert slept == []
    asyncio.run(quota.wait())
    assert slept == [5.0]


def test_an_answer_of_a_window_already_over_says_nothing_of_the_current_one() -> None:
    quota, _ = gate()
    quota.note(answer(4, str(int(NOW + 60))))
    quota.note(answer(0, str(int(NOW - 1))))
    assert quota.remaining == 4
