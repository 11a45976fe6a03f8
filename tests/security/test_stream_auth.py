"""The stream under company tokens, over a real socket: a company's token streams that company only.

The app runs in uvicorn on a thread of this process (the embedded Redis is then shared with the test,
which publishes changes through the worker's own path, `handle_webhook` with a change feed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from schemas.settings import Settings
from service.app import create_app
from tests.support import ledger_fill
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS, bearer, company_token
from tests.support.builders import connection_event, read_completed
from tests.support.services import app_in_thread
from tests.support.sse_client import SseClient
from workers.ledger.changes import ChangeFeed
from workers.runtime.broker import sync_redis
from workers.runtime.db import upgrade

A, B = "company-a", "company-b"


@pytest.fixture
def settings(embedded_settings: Settings) -> Settings:
    upgrade(embedded_settings.database_url)
    changes = {**AUTH_SETTINGS, "stream_token_in_query": True, "stream_heartbeat_seconds": 60}
    return embedded_settings.model_copy(update=changes)


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with app_in_thread(create_app(settings)) as url:
        yield url


def deliver(settings: Settings, *bodies: dict[str, Any]) -> None:
    """Fold and announce on the change feed, as a worker does."""
    ledger_fill.deliver(settings, *bodies, feed=ChangeFeed(sync_redis(settings), settings.redis_namespace, 10_000))


def companies_in(events: list[Any]) -> set[str]:
    found = set()
    for event in events:
        body = event.json()
        if event.event == "snapshot":
            found |= {item["company_id"] for item in body["connections"] + body["syncs"]}
        elif event.event in ("connection.freshness_changed", "connection.health_changed"):
            found.add(body["connection"]["company_id"])
        else:
            found.add(body["company_id"])
    return found


@pytest.mark.parametrize("in_query", [False, True])
def test_a_company_token_streams_its_own_company_and_nothing_else(
    in_query: bool, settings: Settings, base_url: str
) -> None:
    deliver(settings, connection_event(company_id=A, connection_id="conn-a"))
    deliver(settings, connection_event(company_id=B, connection_id="conn-b"))
    token = company_token(A)
    url = f"{base_url}/v1/stream?access_token={token}" if in_query else f"{base_url}/v1/stream"
    with (
        SseClient(url, headers={} if in_query else bearer(token)) as mine,
        SseClient(f"{base_url}/v1/stream", headers=ADMIN_HEADERS) as everything,
    ):
        assert (mine.status, everything.status) == (200, 200)
        snapshot = mine.next()
        assert snapshot.event == "snapshot" and companies_in([snapshot]) == {A}
        assert companies_in([everything.next()]) == {A, B}
        deliver(settings, read_completed([("invoices", "Complete")], company_id=B, connection_id="conn-b"))
        deliver(settings, read_completed([("invoices", "Complete")], company_id=A, connection_id="conn-a"))
        seen_by_admin = everything.take(1) + everything.drain(quiet=0.5)
        assert companies_in(seen_by_admin) == {A, B}
        live = mine.drain(quiet=0.2)
        assert live and companies_in(live) == {A}


def test_a_company_token_cannot_open_another_companys_stream(settings: Settings, base_url: str) -> None:
    token = company_token(A)
    with SseClient(f"{base_url}/v1/stream?company_id={B}", headers=bearer(token)) as other:
        assert other.status == 404
    with SseClient(f"{base_url}/v1/stream?connection_id=conn-b", headers=bearer(token)) as filtered:
        assert filtered.status == 200
        assert companies_in([filtered.next()]) == set()


def test_a_query_token_never_reaches_the_access_log_even_when_it_is_on(
    settings: Settings, base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = company_token(A)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            with SseClient(f"{base_url}/v1/stream?company_id={A}&access_token={token}") as stream:
                assert stream.status == 200 and stream.next().event == "snapshot"
            refused = httpx.get(f"{base_url}/v1/events?access_token={token}")
            assert refused.status_code == 401
    finally:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    lines = [record.getMessage() for record in caplog.records if record.name == "uvicorn.access"]
    assert any("/v1/stream?company_id=" in line for line in lines), lines
    assert not [line for line in lines if token in line or "access_token" in line]
