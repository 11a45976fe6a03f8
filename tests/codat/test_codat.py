"""The Codat client: error mapping, retries that never double an action, Retry-After, the key kept secret."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from schemas.errors import ErrorCode
from workers.codat.client import CodatClient, RetryPolicy
from workers.codat.errors import CodatError

KEY = "c2VjcmV0LWtleS1kby1ub3QtbGVhaw=="
COMPANY = "company-1"
OP = {
    "id": "ds-1",
    "companyId": COMPANY,
    "connectionId": "conn-1",
    "dataType": "invoices",
    "status": "Queued",
    "requested": "2026-11-25T10:00:00Z",
    "completed": None,
}

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A scripted Codat: answers in turn (a response or an exception), and records every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, key: str = KEY, retries: int = 3, max_retry_after: float = 30) -> CodatClient:
        return CodatClient(
            "https://codat.test",
            key,
            transport=httpx.MockTransport(self),
            policy=RetryPolicy(max_retries=retries, base_delay=0.1, max_retry_after=max_retry_after),
            sleep=self.sleep,
        )


def codat_error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "error": message}, headers=headers)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def queue(client: CodatClient) -> tuple[int, dict[str, Any]]:
    async with client:
        return await client.refresh_data_type(COMPANY, "invoices")


def test_requests_carry_the_key_as_basic_authorization_against_the_base_url() -> None:
    codat = Recorder(httpx.Response(200, json=OP))
    status, op = run(queue(codat.client()))
    assert (status, op["id"]) == (200, "ds-1")
    request = codat.requests[0]
    assert request.headers["authorization"] == f"Basic {KEY}"
    assert str(request.url) == f"https://codat.test/companies/{COMPANY}/data/queue/invoices"


def test_a_404_stays_a_404_not_found() -> None:
    codat = Recorder(codat_error(404, "Company not found"))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client()))
    assert (caught.value.status, caught.value.code, caught.value.codat_status) == (404, ErrorCode.NOT_FOUND, 404)
    assert len(codat.requests) == 1


@pytest.mark.parametrize("status", [409, 400])
def test_dataset_already_in_progress_becomes_409_sync_already_in_progress(status: int) -> None:
    codat = Recorder(codat_error(status, "DatasetAlreadyInProgressException: a dataset is already in progress"))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client()))
    assert (caught.value.status, caught.value.code) == (409, ErrorCode.SYNC_ALREADY_IN_PROGRESS)
    assert len(codat.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_becomes_502_naming_the_setting_and_never_showing_the_key(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    codat = Recorder(codat_error(status, f"Unauthorized key {KEY}"))
    with caplog.at_level(logging.DEBUG), pytest.raises(CodatError) as caught:
        run(queue(codat.client()))
    assert (caught.value.status, caught.value.code) == (502, ErrorCode.CODAT_AUTH_FAILED)
    assert "SYNCTRACK_CODAT_API_KEY" in caught.value.detail
    assert KEY not in json.dumps(caught.value.body())
    assert KEY not in caplog.text


def test_no_key_configured_fails_without_calling_codat() -> None:
    codat = Recorder(httpx.Response(200, json=OP))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client(key="")))
    assert caught.value.code == ErrorCode.CODAT_AUTH_FAILED
    assert "SYNCTRACK_CODAT_API_KEY" in caught.value.detail
    assert codat.requests == []


def test_a_429_waits_what_retry_after_says_then_succeeds_even_for_a_refresh() -> None:
    codat = Recorder(codat_error(429, "Too many requests", {"Retry-After": "7"}), httpx.Response(200, json=OP))
    status, op = run(queue(codat.client()))
    assert (status, op["id"]) == (200, "ds-1")
    assert codat.sleeps == [7.0]
    assert len(codat.requests) == 2


def test_a_retry_after_longer_than_the_limit_answers_503_with_that_retry_after() -> None:
    codat = Recorder(codat_error(429, "Too many requests", {"Retry-After": "120"}))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client(max_retry_after=30)))
    assert (caught.value.status, caught.value.code) == (503, ErrorCode.CODAT_UNAVAILABLE)
    assert caught.value.headers == {"Retry-After": "120"}
    assert codat.sleeps == [] and len(codat.requests) == 1


def test_a_429_that_persists_gives_up_after_the_retries_with_503() -> None:
    codat = Recorder(codat_error(429, "Too many requests", {"Retry-After": "1"}))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client(retries=2)))
    assert (caught.value.status, caught.value.code, caught.value.codat_status) == (
        503,
        ErrorCode.CODAT_UNAVAILABLE,
        429,
    )
    assert len(codat.requests) == 3


def test_a_500_then_success_is_retried_with_backoff_for_a_read() -> None:
    codat = Recorder(codat_error(500, "boom"), codat_error(502, "boom"), httpx.Response(200, json={"id": "conn-1"}))

    async def get() -> dict[str, Any]:
        async with codat.client() as client:
            return await client.get_connection(COMPANY, "conn-1")

    assert run(get())["id"] == "conn-1"
    assert len(codat.requests) == 3
    assert 0.05 <= codat.sleeps[0] <= 0.1 and 0.1 <= codat.sleeps[1] <= 0.2


def test_a_500_to_a_refresh_is_not_retried_since_the_refresh_may_have_been_queued() -> None:
    codat = Recorder(codat_error(500, "boom"), httpx.Response(200, json=OP))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client()))
    assert (caught.value.status, caught.value.code, caught.value.codat_status) == (
        502,
        ErrorCode.CODAT_UNAVAILABLE,
        500,
    )
    assert len(codat.requests) == 1


def test_a_refresh_is_retried_when_the_connection_could_not_even_be_opened() -> None:
    codat = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=OP))
    status, _ = run(queue(codat.client()))
    assert status == 200 and len(codat.requests) == 2


def test_a_refresh_that_timed_out_after_sending_is_not_retried_and_says_so() -> None:
    codat = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json=OP))
    with pytest.raises(CodatError) as caught:
        run(queue(codat.client()))
    assert (caught.value.status, caught.value.code, caught.value.codat_status) == (
        503,
        ErrorCode.CODAT_UNAVAILABLE,
        None,
    )
    assert "may have been taken" in caught.value.detail
    assert len(codat.requests) == 1


def test_a_read_that_times_out_is_retried() -> None:
    codat = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json={}))

    async def status() -> dict[str, Any]:
        async with codat.client() as client:
            return await client.data_status(COMPANY)

    assert run(status()) == {}
    assert len(codat.requests) == 2


def test_a_delete_answered_404_after_an_attempt_of_unknown_outcome_counts_as_done() -> None:
    codat = Recorder(httpx.ReadTimeout("slow"), codat_error(404, "Data connection not found"))

    async def delete() -> int:
        async with codat.client() as client:
            return await client.delete_connection(COMPANY, "conn-1")

    assert run(delete()) == 404
    assert [r.method for r in codat.requests] == ["DELETE", "DELETE"]


def test_a_first_delete_answered_404_is_not_found() -> None:
    codat = Recorder(codat_error(404, "Data connection not found"))

    async def delete() -> int:
        async with codat.client() as client:
            return await client.delete_connection(COMPANY, "conn-1")

    with pytest.raises(CodatError) as caught:
        run(delete())
    assert caught.value.code == ErrorCode.NOT_FOUND


def test_listing_connections_pages_through_every_page() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        items = [{"id": f"conn-{i}"} for i in range(100 * (number - 1), min(100 * number, 230))]
        return httpx.Response(200, json={"results": items, "pageNumber": number, "pageSize": 100, "totalResults": 230})

    async def listing() -> list[dict[str, Any]]:
        async with CodatClient("https://codat.test", KEY, transport=httpx.MockTransport(page)) as client:
            return await client.list_connections(COMPANY)

    items = run(listing())
    assert len(items) == 230 and items[-1]["id"] == "conn-229"


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    import random

    policy = RetryPolicy(base_delay=0.25, max_delay=8.0)
    rng = random.Random(1)
    delays = [policy.backoff(attempt, rng) for attempt in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.25 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] >= 4.0
