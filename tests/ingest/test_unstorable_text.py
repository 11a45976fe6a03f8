"""Webhooks holding text no ledger database can store — a NUL (`\\u0000`) or a lone UTF-16 surrogate
(`\\ud800`) — on a real worker and the real Redis, on SQLite and PostgreSQL: each is stored once with outcome
`failed`, its body kept, its neighbours folded as usual, and nothing retried or dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import redis

import workers.ingest.handle
from schemas.events import Event
from schemas.settings import Settings
from service.app import create_app
from tests.support.builders import COMPANY, company_event, connection_event, read_completed
from tests.support.ops_support import admin_client, cli, ops_settings, running_worker
from tests.support.services import wait_for
from tests.support.workload import Delivery, signed
from workers.runtime.redis_queues import DeadLetterQueue

pytestmark = pytest.mark.redis

SURROGATE_NAME = "msg_surrogate_name"
NUL_COMPANY = "msg_nul_company"
SURROGATE_CONNECTION = "msg_surrogate_connection"
NUL_KEY = "msg_nul_key"
POISONED = (SURROGATE_NAME, NUL_COMPANY, SURROGATE_CONNECTION, NUL_KEY)


@pytest.fixture
def settings(database_url: str, redis_url: str, namespace: str) -> Settings:
    return ops_settings(database_url, redis_url, namespace)


def send_together(settings: Settings, deliveries: list[Delivery]) -> list[int]:
    """POST every delivery at once, so the receiver queues them in one message and the worker folds them in
    one batch."""
    app = create_app(settings)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            async with app.router.lifespan_context(app):
                answers = await asyncio.gather(
                    *(client.post("/webhooks/codat", content=d.body, headers=signed(d)) for d in deliveries)
                )
        return [a.status_code for a in answers]

    return asyncio.run(fire())


def poisoned_deliveries() -> list[Delivery]:
    """Bodies as Codat's JSON could spell them: `json.dumps` writes a NUL as `\\u0000` and a lone surrogate as
    `\\ud800`, so each raw body is plain ASCII."""
    with_key = connection_event(minutes=3, connection_id="conn-key", company_id="company-key")
    with_key["payload"]["connection"]["connectionInfo"] = {"a\x00b": "GBP"}
    return [
        Delivery(SURROGATE_NAME, json.dumps(company_event(company_id="company-s", name="Toft \ud800 Stores"))),
        Delivery(NUL_COMPANY, json.dumps(read_completed(company_id="company\x00", connection_id="conn-nul"))),
        Delivery(SURROGATE_CONNECTION, json.dumps(connection_event(minutes=2, connection_id="conn-\udfff"))),
        Delivery(NUL_KEY, json.dumps(with_key)),
    ]


def stored(client: Any, event_id: str) -> dict[str, Any] | None:
    answer = client.get(f"/v1/events/{event_id}")
    return answer.json() if answer.status_code == 200 else None


def test_unstorable_text_is_stored_failed_and_its_neighbours_fold(settings: Settings) -> None:
    neighbours = [Delivery(f"msg_conn_{i}", json.dumps(connection_event(minutes=i))) for i in range(3)]
    neighbours.append(Delivery("msg_read", json.dumps(read_completed(minutes=10))))
    deliveries = neighbours[:2] + poisoned_deliveries() + neighbours[2:]
    assert send_together(settings, deliveries) == [202] * len(deliveries)

    with admin_client(settings) as client, running_worker(settings):
        events = {
            event_id: wait_for(lambda event_id=event_id: stored(client, event_id), message=f"{event_id} stored")
            for event_id in [d.message_id for d in deliveries]
        }
        for event_id in POISONED:
            event = events[event_id]
            assert event["outcome"] == "failed", event
            assert "cannot store" in event["error"]
        assert "payload.name" in events[SURROGATE_NAME]["error"]
        assert "\\ud800" in events[SURROGATE_NAME]["error"]
        assert events[SURROGATE_NAME]["body"]["payload"]["name"] == "Toft \ud800 Stores"
        assert events[NUL_COMPANY]["company_id"] == "company\\u0000"
        assert events[SURROGATE_CONNECTION]["connection_id"] == "conn-\\udfff"
        assert events[NUL_KEY]["body"]["payload"]["connection"]["connectionInfo"] == {"a\x00b": "GBP"}

        assert {events[d.message_id]["outcome"] for d in neighbours} == {"processed"}
        syncs = client.get(f"/v1/connections/{json.loads(neighbours[0].body)['payload']['connection']['id']}/syncs")
        assert {s["phase"] for s in syncs.json()["items"]} == {"succeeded"}
        companies = {c["id"] for c in client.get("/v1/companies").json()["items"]}
        assert companies == {COMPANY}

        assert client.get("/v1/admin/dead-letters").json()["total"] == 0
    assert cli(settings, "dlq", "list").output.strip().endswith("0 dead letters")
    assert DeadLetterQueue(redis.Redis.from_url(settings.redis_url), settings.redis_namespace).count() == 0


def test_the_dead_letter_routes_show_whatever_a_dead_letter_holds(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead letter carrying an unstorable body (as a fold bug, or an older release, leaves one) and one that is
    not a message at all are listed and shown, by the API and by `synctrack dlq`, never a 5xx or a crash."""
    parse = workers.ingest.handle.parse_event  # type: ignore[attr-defined]

    def buggy(raw: Any, message_id: str, received_at: Any) -> Event:
        if message_id == SURROGATE_NAME:
            raise RuntimeError("fold bug: Toft \ud800 Stores")
        return parse(raw, message_id, received_at)

    monkeypatch.setattr(workers.ingest.handle, "parse_event", buggy)
    queue = redis.Redis.from_url(settings.redis_url)
    dead = DeadLetterQueue(queue, settings.redis_namespace)
    queue.zadd(dead.zset_key, {"not-a-message": time.time() * 1000})
    queue.hset(dead.messages_key, "not-a-message", b"\xff\x00 not JSON")
    assert send_together(settings, [poisoned_deliveries()[0]]) == [202]

    with admin_client(settings) as client, running_worker(settings):
        page = wait_for(
            lambda: (lambda page: page if page["total"] >= 2 else None)(client.get("/v1/admin/dead-letters").json()),
            message="two dead letters",
        )
        letters = {letter["id"]: letter for letter in page["items"]}
        poisoned = next(letter for letter in letters.values() if letter["event_id"] == SURROGATE_NAME)
        assert poisoned["company_id"] == "company-s"
        assert poisoned["last_error"] == "RuntimeError: fold bug: Toft \\ud800 Stores"
        assert letters["not-a-message"]["actor"] == "unknown"
        for letter_id in letters:
            shown = client.get(f"/v1/admin/dead-letters/{letter_id}")
            assert shown.status_code == 200, shown.text
        listed = cli(settings, "dlq", "list")
        assert listed.exit_code == 0 and "2 dead letters" in listed.output
        for letter_id in letters:
            assert cli(settings, "dlq", "show", letter_id).exit_code == 0

        monkeypatch.undo()  # the fix is deployed
        redriven = client.post("/v1/admin/dead-letters/redrive", json={"all": True})
        assert redriven.status_code == 200 and redriven.json()["event_ids"] == [SURROGATE_NAME]
        event = wait_for(lambda: stored(client, SURROGATE_NAME), message="the redriven event stored")
        assert event["outcome"] == "failed"
        assert client.post("/v1/admin/dead-letters/purge", json={"all": True}).json() == {"purged": 1}
