"""`POST /webhooks/codat` is an ordinary route behind the app's one middleware stack, its checks come in one
order, and its counters are written per turn of the event loop.

Straight through ASGI on the app `create_app` builds, with the embedded Redis: many webhooks in flight at
once, as under load.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.builders import OTHER_SECRET, SECRET, connection_event, signed_request
from workers.runtime.db import upgrade


@pytest.fixture
def settings(embedded_settings: Settings) -> Settings:
    upgrade(embedded_settings.database_url)
    return embedded_settings.model_copy(update={"webhook_secrets": [SECRET]})


def webhook_scope(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    raw = [(b"host", b"test"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/codat",
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }


async def post(app: Any, body: bytes, headers: dict[str, str], arrived: asyncio.Event | None = None) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        if arrived is not None:
            await arrived.wait()
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(webhook_scope(body, headers), receive, send)
    return status


def test_webhooks_answered_together_are_counted_exactly_with_one_write_per_label_set(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str | None, str, str, int]] = []
    monkeypatch.setattr("service.ingest.tally.record_webhook", lambda *args: writes.append(args))
    app = create_app(settings)
    fresh = [signed_request(connection_event(connection_id=f"conn-{i}"), msg_id=f"msg_{i}") for i in range(40)]
    forged = [signed_request(connection_event(), msg_id=f"msg_forged_{i}", secret=OTHER_SECRET) for i in range(10)]

    async def scenario() -> list[int]:
        async with app.router.lifespan_context(app):
            first = await asyncio.gather(*(post(app, body, headers) for body, headers in fresh + forged))
            again = await asyncio.gather(*(post(app, body, headers) for body, headers in fresh[:5]))
        return [*first, *again]

    statuses = asyncio.run(scenario())

    assert statuses == [202] * 40 + [401] * 10 + [200] * 5
    totals: dict[tuple[str | None, str, str], int] = {}
    for event_type, result, reason, count in writes:
        totals[event_type, result, reason] = totals.get((event_type, result, reason), 0) + count
    assert totals == {
        ("connection.connected", "accepted", ""): 40,
        ("unknown", "rejected", "invalid_signature"): 10,
        ("connection.connected", "duplicate", ""): 5,
    }
    assert len(writes) < 10  # 55 answers: a handful of writes, not one each


CHECKS = [
    ("headers", 431, "headers_too_large"),
    ("source", 403, "forbidden_network"),
    ("media type", 415, "unsupported_media_type"),
    ("signature headers", 401, "missing_signature_headers"),
    ("size", 413, "payload_too_large"),
]
"""The webhook route's checks, in their order, with the answer of each."""


@pytest.mark.parametrize("first", range(len(CHECKS)), ids=[name for name, _, _ in CHECKS])
def test_the_webhook_checks_come_in_one_order_a_refusal_naming_the_first_that_failed(
    settings: Settings, first: int
) -> None:
    failing = {name for name, _, _ in CHECKS[first:]}
    limits = {"webhook_allowed_networks": ["192.0.2.0/24"], "max_body_bytes": 100}
    body, headers = signed_request(connection_event(), msg_id="msg_order")  # larger than 100 bytes
    if "headers" in failing:
        headers |= {f"x-pad-{i}": "x" * 100 for i in range(120)}
    if "media type" in failing:
        headers["content-type"] = "text/plain"
    if "signature headers" in failing:
        headers = {name: value for name, value in headers.items() if not name.startswith("webhook-")}
    peer = ("198.51.100.7", 4000) if "source" in failing else ("192.0.2.10", 4000)
    with TestClient(create_app(settings.model_copy(update=limits)), client=peer) as client:
        answer = client.post("/webhooks/codat", content=body, headers=headers)

    _, status, error = CHECKS[first]
    assert (answer.status_code, answer.json()["error"]) == (status, error)


def test_the_webhook_route_still_refuses_oversized_headers_first(settings: Settings) -> None:
    body, headers = signed_request(connection_event(), msg_id="msg_big_headers")
    padded = headers | {f"x-pad-{i}": "x" * 100 for i in range(120)}
    with TestClient(create_app(settings)) as client:
        answer = client.post("/webhooks/codat", content=body, headers=padded)

    assert answer.status_code == 431
    assert answer.json()["error"] == "headers_too_large"


def test_the_webhook_route_scrubs_a_query_token_before_anything_sees_it(settings: Settings) -> None:
    seen: list[bytes] = []
    app = create_app(settings)

    async def spy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["query_string"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    route: Any = next(route for route in app.routes if getattr(route, "path", None) == "/webhooks/codat")
    route.app = spy  # the middleware stack and the router stay; the receiver is spied on
    body, headers = signed_request(connection_event(), msg_id="msg_query")
    with TestClient(app) as client:
        answer = client.post("/webhooks/codat?access_token=secret-value&x=1", content=body, headers=headers)

    assert answer.status_code == 204
    assert seen == [b"x=1"]


def test_with_cors_configured_a_webhook_carrying_an_origin_gets_the_cors_answer(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://app.example"]}))
    body, headers = signed_request(connection_event(), msg_id="msg_origin")
    with TestClient(app) as client:
        answer = client.post("/webhooks/codat", content=body, headers=headers | {"origin": "https://app.example"})
        plain = client.post("/webhooks/codat", content=body, headers=headers)

    assert answer.status_code == 202
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert plain.status_code == 200  # the same message again: a duplicate
    assert "access-control-allow-origin" not in plain.headers


def test_other_methods_on_the_webhook_path_are_still_the_routers_405(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        answer = client.get("/webhooks/codat")

    assert answer.status_code == 405
    assert json.loads(answer.text)["error"]
