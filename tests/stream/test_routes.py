"""`GET /v1/stream` (`service/stream/routes.py`): an ordinary route, behind the app's one middleware stack.

Over a real socket (uvicorn on a thread of this process, the embedded Redis) for what a client sees, and
straight through ASGI for what an open stream holds while it waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.types import Message

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from service.stream import response
from service.stream.fanout import SNAPSHOT_THREADS, Fanout
from tests.support.auth import ADMIN_HEADERS, ADMIN_TOKEN, company_token
from tests.support.frames import locals_held
from tests.support.services import app_in_thread
from tests.support.sse_client import SseClient


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    with app_in_thread(create_app(settings)) as url:
        yield url


def test_the_stream_answers_every_refusal_as_any_route_does(base_url: str) -> None:
    stream = f"{base_url}/v1/stream"

    anonymous = httpx.get(stream, timeout=5)
    wrong_company = httpx.get(
        stream, params={"company_id": "other"}, headers={"Authorization": f"Bearer {company_token('mine')}"}
    )
    posted = httpx.post(stream, headers=ADMIN_HEADERS, timeout=5)
    crowded = httpx.get(stream, headers={**ADMIN_HEADERS, **{f"x-filler-{i}": "x" for i in range(120)}}, timeout=5)

    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized")
    assert (wrong_company.status_code, wrong_company.json()["error"]) == (404, "not_found")
    assert posted.status_code == 405
    assert (crowded.status_code, crowded.json()["error"]) == (431, "headers_too_large")


def test_the_stream_opens_with_its_headers_and_a_snapshot_and_head_opens_nothing(base_url: str) -> None:
    head = httpx.head(f"{base_url}/v1/stream", headers=ADMIN_HEADERS, timeout=5)
    with SseClient(f"{base_url}/v1/stream", headers=ADMIN_HEADERS) as client:
        first = client.next()
        status = httpx.get(f"{base_url}/v1/stream/status", headers=ADMIN_HEADERS, timeout=5).json()

    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert head.headers["cache-control"] == "no-store" and head.headers["x-accel-buffering"] == "no"
    assert first.event == "snapshot" and first.json()["connections"] == []
    assert status["clients"] == 1


def test_a_stream_before_the_change_feed_is_reached_is_a_503_json_error(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no lifespan: the reader never started

    answer = client.get("/v1/stream", headers=ADMIN_HEADERS)

    assert answer.status_code == 503
    assert answer.json()["error"] == "stream_unavailable" and answer.headers["retry-after"] == "1"


def test_an_idle_open_stream_does_not_keep_its_snapshot(settings: Settings) -> None:
    app = create_app(settings)
    opened = asyncio.Event()

    async def scenario() -> list[Any]:
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            await gone
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if b"event: snapshot" in message.get("body", b""):
                opened.set()

        headers = [(b"host", b"test"), (b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": "/v1/stream",
            "root_path": "",
            "query_string": b"",
        }
        scope |= {"headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80), "http_version": "1.1"}
        async with app.router.lifespan_context(app):
            task = asyncio.create_task(app(scope, receive, send))
            await asyncio.wait_for(opened.wait(), 10)
            await asyncio.sleep(0.05)
            values = locals_held(task.get_coro())
            gone.set_result(None)
            await asyncio.wait_for(task, 10)
        return values

    values = asyncio.run(scenario())

    assert values, "the stream's frames were walked"
    assert not [v for v in values if isinstance(v, bytes) and b"event: snapshot" in v]


def test_an_unexpected_failure_before_the_stream_opens_is_a_500_as_on_any_route(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings)

    def broken(*_: object) -> None:
        raise RuntimeError("not a client's fault")

    with app_in_thread(app) as base:
        monkeypatch.setattr(services(app).get(Fanout), "subscribe", broken)
        answer = httpx.get(f"{base}/v1/stream", headers=ADMIN_HEADERS, timeout=5)
        after = httpx.get(f"{base}/v1/stream/status", headers=ADMIN_HEADERS, timeout=5)

    assert (answer.status_code, answer.text) == (500, "Internal Server Error")
    assert answer.headers["content-type"].startswith("text/plain")
    assert after.status_code == 200, "the process goes on serving"


def test_snapshots_of_many_clients_opening_at_once_are_read_a_few_threads_at_a_time(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, running, most = threading.Lock(), [0], [0]

    def slow_snapshot(*args: Any) -> dict[str, Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return real_snapshot(*args)

    real_snapshot = response.load_snapshot
    monkeypatch.setattr(response, "load_snapshot", slow_snapshot)
    with app_in_thread(create_app(settings)) as base:
        clients = []
        with ThreadPoolExecutor(12) as pool:
            clients = list(pool.map(lambda _: SseClient(f"{base}/v1/stream", ADMIN_HEADERS), range(12)))
        try:
            openings = [client.next().event for client in clients]
        finally:
            for client in clients:
                client.close()

    assert openings == ["snapshot"] * 12
    assert most[0] == SNAPSHOT_THREADS


def test_with_cors_configured_a_stream_opened_from_a_page_gets_the_cors_answer(settings: Settings) -> None:
    origin = "https://app.example.com"
    app = create_app(settings.model_copy(update={"cors_origins": [origin]}))
    with app_in_thread(app) as base:
        for headers in ({**ADMIN_HEADERS, "Origin": origin}, ADMIN_HEADERS):
            with httpx.stream("GET", f"{base}/v1/stream", headers=headers, timeout=10) as answer:
                first = next(answer.iter_lines())
                allowed = answer.headers.get("access-control-allow-origin")
            assert answer.status_code == 200 and first == "id: 0-0"
            assert allowed == (origin if "Origin" in headers else None)
