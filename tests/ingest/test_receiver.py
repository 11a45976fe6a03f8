"""`POST /webhooks/codat`: every way in, every way out — on the embedded Redis and on the real one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fakeredis import FakeRedis
from starlette.applications import Starlette
from starlette.testclient import TestClient
from starlette.types import Message

from schemas.settings import Settings
from service.app import create_app
from tests.support.builders import OTHER_SECRET, SECRET, fixture, signed_headers, signed_request
from workers.runtime.broker import FOLD_BACKFILL_ACTOR, FOLD_BATCH_ACTOR, embedded_server
from workers.runtime.db import upgrade
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE
from workers.runtime.redis_queues import queued_messages as queued_on


@pytest.fixture(params=["embedded", "redis"])
def settings(request: pytest.FixtureRequest, embedded_settings: Settings) -> Iterator[Settings]:
    upgrade(embedded_settings.database_url)
    if request.param == "embedded":
        yield embedded_settings
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = request.getfixturevalue("namespace")
    yield embedded_settings.model_copy(update={"embedded": False, "redis_url": redis_url, "redis_namespace": namespace})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The fold messages waiting on the queue, decoded."""
    client = FakeRedis(server=embedded_server()) if settings.embedded else redis.Redis.from_url(settings.redis_url)
    lanes = (WEBHOOK_QUEUE, BACKFILL_QUEUE)
    return [message.asdict() for queue in lanes for message in queued_on(client, settings.redis_namespace, queue)]


def queued(settings: Settings) -> list[dict[str, Any]]:
    """Every event waiting on the queue, as `{id, body, received_at}`, whichever message carries it."""
    events = []
    for message in queued_messages(settings):
        assert message["actor_name"] in (FOLD_BATCH_ACTOR, FOLD_BACKFILL_ACTOR)
        (items,) = message["args"]
        events += [{"id": i, "body": body, "received_at": at} for i, body, at in items]
    return events


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    response: httpx.Response = client.post("/webhooks/codat", content=body, headers=headers)
    return response


def test_a_signed_webhook_is_accepted_and_queued_for_the_worker(client: TestClient, settings: Settings) -> None:
    body, headers = signed_request(fixture("read.completed"))
    response = post(client, body, headers)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "id": headers["webhook-id"]}
    (event,) = queued(settings)
    assert event["id"] == headers["webhook-id"]
    assert json.loads(event["body"]) == json.loads(body)
    assert event["received_at"]


def test_svix_header_names_are_accepted_too(client: TestClient) -> None:
    body, headers = signed_request(fixture("connection.connected"), family="svix")
    assert post(client, body, headers).status_code == 202


def test_svix_headers_win_when_both_families_are_present(client: TestClient) -> None:
    body, good = signed_request(fixture("connection.connected"), family="svix")
    bad = {k.replace("svix-", "webhook-"): v for k, v in good.items()}
    bad["webhook-signature"] = "v1,AAAA"
    response = post(client, body, {**bad, **good})
    assert response.status_code == 202
    assert response.json()["id"] == good["svix-id"]


def test_every_configured_secret_verifies_during_rotation(settings: Settings) -> None:
    rotated = settings.model_copy(update={"webhook_secrets": [OTHER_SECRET, SECRET]})
    with TestClient(create_app(rotated)) as client:
        for secret in (SECRET, OTHER_SECRET):
            body, headers = signed_request(fixture("read.completed"), secret=secret)
            assert post(client, body, headers).status_code == 202


def test_a_signature_from_a_rotated_out_secret_is_rejected(client: TestClient) -> None:
    body, headers = signed_request(fixture("read.completed"), secret=OTHER_SECRET)
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"


def test_a_tampered_body_is_rejected(client: TestClient, settings: Settings) -> None:
    body, headers = signed_request(fixture("read.completed"))
    response = post(client, body.replace(b"Complete", b"Fetching"), headers)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_signature")
    assert queued(settings) == []


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_signature_headers_are_named(client: TestClient, missing: str) -> None:
    body, headers = signed_request(fixture("read.completed"))
    del headers[missing]
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_signature_headers"
    assert "webhook-id" in response.json()["detail"]


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_a_timestamp_outside_five_minutes_is_rejected(client: TestClient, skew: int) -> None:
    body, headers = signed_request(fixture("read.completed"), timestamp=time.time() + skew)
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "timestamp_out_of_tolerance"


def test_a_timestamp_just_inside_the_tolerance_is_accepted(client: TestClient) -> None:
    body, headers = signed_request(fixture("read.completed"), timestamp=time.time() - 290)
    assert post(client, body, headers).status_code == 202


def test_malformed_json_is_a_400_that_says_so(client: TestClient) -> None:
    body = b'{"id": "x", "eventType": '
    response = post(client, body, signed_headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert response.json()["detail"]


def raw_signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Svix headers for any bytes, UTF-8 or not: HMAC-SHA256 of "{id}.{timestamp}." + the raw body."""
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    signature = "v1," + base64.b64encode(digest).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def test_signed_invalid_utf8_is_a_400(client: TestClient) -> None:
    body = b'{"id": "\xff\xfe"}'
    response = post(client, body, raw_signed_headers(body))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_json")


@pytest.mark.parametrize("body", [b'{"id": "\xff\xfe"}', b"\x00\x81garbage", b"not json at all"])
def test_unsigned_garbage_is_a_401_before_anything_reads_the_body(client: TestClient, body: bytes) -> None:
    response = post(client, body, raw_signed_headers(body, secret=OTHER_SECRET))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_signature")


def test_deeply_nested_json_is_a_400_not_a_crash(client: TestClient) -> None:
    body = ("[" * 100_000 + "]" * 100_000).encode()
    response = post(client, body, signed_headers(body))
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"hello": "world"}, "Codat envelope"),
        ({"id": "x", "eventType": "read.completed", "generatedDate": "soon"}, "ISO 8601"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_json_that_is_not_a_codat_envelope_is_a_400(client: TestClient, body: Any, fragment: str) -> None:
    raw, headers = signed_request(body)
    response = post(client, raw, headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_envelope"
    assert fragment in response.json()["detail"]


def test_unknown_event_types_are_accepted(client: TestClient) -> None:
    body = {"id": "e1", "eventType": "bills.write.successful", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    raw, headers = signed_request(body)
    assert post(client, raw, headers).status_code == 202


def test_an_oversized_body_is_a_413_by_declared_length(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 1000})
    with TestClient(create_app(small)) as client:
        body, headers = signed_request(
            {"id": "x", "eventType": "t", "generatedDate": "2026-11-20T09:00:00Z", "payload": {"pad": "x" * 2000}}
        )
        response = post(client, body, headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_an_oversized_streamed_body_is_refused_while_reading(settings: Settings) -> None:
    """No content-length, 100 MB offered in chunks: the app stops asking after the limit."""
    app = create_app(settings.model_copy(update={"max_body_bytes": 50_000}))
    headers = [(k.encode(), v.encode()) for k, v in signed_headers("x").items()]
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/webhooks/codat",
        "raw_path": b"",
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "root_path": "",
        "app": app,
    }
    chunks_read = 0
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 10_000, "more_body": chunks_read < 10_000}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"] == "payload_too_large"
    assert chunks_read <= 6


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_other_media_types_are_a_415(client: TestClient, content_type: str) -> None:
    body, headers = signed_request(fixture("read.completed"))
    headers["content-type"] = content_type
    response = post(client, body, headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


def test_a_repeat_is_answered_duplicate_and_queued_once(client: TestClient, settings: Settings) -> None:
    body, headers = signed_request(fixture("read.completed"))
    assert post(client, body, headers).status_code == 202
    again = post(client, body, signed_headers(body, msg_id=headers["webhook-id"]))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": headers["webhook-id"]}
    assert len(queued(settings)) == 1


def test_simultaneous_copies_on_two_web_processes_are_queued_once(settings: Settings) -> None:
    """Two app instances stand for two processes: only the shared Redis can tell the copies apart."""
    apps: list[Starlette] = [create_app(settings), create_app(settings)]
    body, headers = signed_request(fixture("read.completed"))

    async def fire() -> list[int]:
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://synctrack") for app in apps
        ]
        try:
            responses = await asyncio.gather(
                *(clients[i % 2].post("/webhooks/codat", content=body, headers=headers) for i in range(40))
            )
        finally:
            for c in clients:
                await c.aclose()
        return [r.status_code for r in responses]

    statuses = asyncio.run(fire())
    assert statuses.count(202) == 1
    assert statuses.count(200) == 39
    assert len(queued(settings)) == 1


def test_many_concurrent_distinct_events_are_all_queued(settings: Settings) -> None:
    app = create_app(settings)
    requests = [signed_request(fixture("read.completed")) for _ in range(300)]

    async def fire() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
            responses = await asyncio.gather(*(c.post("/webhooks/codat", content=b, headers=h) for b, h in requests))
        return [r.status_code for r in responses]

    assert asyncio.run(fire()) == [202] * 300
    events = queued(settings)
    assert sorted(e["id"] for e in events) == sorted(h["webhook-id"] for _, h in requests)
    # Requests that arrive together share one message: the workers store and fold them together.
    assert len(queued_messages(settings)) < len(requests)


def test_a_batch_with_a_repeat_in_it_queues_the_new_events_once_and_the_repeat_not_at_all(settings: Settings) -> None:
    app = create_app(settings)
    first_body, first_headers = signed_request(fixture("read.completed"))
    requests = [signed_request(fixture("read.completed")) for _ in range(20)]
    copies = [(first_body, signed_headers(first_body, msg_id=first_headers["webhook-id"])) for _ in range(5)]

    async def fire() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
            await c.post("/webhooks/codat", content=first_body, headers=first_headers)
            responses = await asyncio.gather(
                *(c.post("/webhooks/codat", content=b, headers=h) for b, h in [*requests, *copies])
            )
        return [r.status_code for r in responses]

    assert asyncio.run(fire()) == [202] * 20 + [200] * 5
    ids = [e["id"] for e in queued(settings)]
    assert sorted(ids) == sorted([first_headers["webhook-id"], *(h["webhook-id"] for _, h in requests)])


def test_when_redis_is_down_the_answer_is_503_with_retry_after(embedded_settings: Settings) -> None:
    from tests.support.services import free_port

    down = embedded_settings.model_copy(update={"embedded": False, "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(down)
    body, headers = signed_request(fixture("read.completed"))

    async def fire() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
            return await c.post("/webhooks/codat", content=body, headers=headers)

    response = asyncio.run(fire())
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"] == "queue_unavailable"
