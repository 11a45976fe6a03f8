"""Many events per message on a real worker and the real Redis: webhooks that arrive together travel as one
`fold_webhooks` message and are folded together, and one event that fails alone is split out — it retries and
dead-letters alone while its neighbours are folded once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis

import workers.ingest.handle
from schemas.events import Event
from schemas.settings import Settings
from service.app import create_app
from tests.support.builders import connection_event, read_completed
from tests.support.ops_support import admin_client, ops_settings, running_worker
from tests.support.services import wait_for
from tests.support.workload import Delivery, signed
from workers.runtime.broker import FOLD_ACTOR, FOLD_BACKFILL_ACTOR
from workers.runtime.redis_queues import queued_messages

pytestmark = pytest.mark.redis

POISONED = "msg_read_3"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, namespace: str) -> Settings:
    return ops_settings(sqlite_url, redis_url, namespace)


def send_together(settings: Settings, deliveries: list[Delivery]) -> list[int]:
    app = create_app(settings)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            async with app.router.lifespan_context(app):
                answers = await asyncio.gather(
                    *(client.post("/webhooks/codat", content=d.body, headers=signed(d)) for d in deliveries)
                )
        return [a.status_code for a in answers]

    return asyncio.run(fire())


def test_webhooks_that_arrive_together_travel_in_one_message_and_all_fold(settings: Settings) -> None:
    deliveries = [
        Delivery(f"msg_read_{i}", json.dumps(read_completed(minutes=i, connection_id=f"conn-{i}"))) for i in range(40)
    ]
    assert send_together(settings, deliveries) == [202] * 40
    messages = queued_messages(redis.Redis.from_url(settings.redis_url), settings.redis_namespace, "backfill")
    assert {m.actor_name for m in messages} == {FOLD_BACKFILL_ACTOR}  # generated weeks ago: the backfill lane
    assert len(messages) < 40
    assert sorted(item[0] for m in messages for item in m.args[0]) == sorted(d.message_id for d in deliveries)

    with admin_client(settings) as client, running_worker(settings):
        wait_for(
            lambda: (
                client.get("/v1/events", params={"outcome": "processed", "limit": "100"}).json()["items"].__len__()
                == 40
            ),
            message="all forty folded",
        )
        for i in range(40):
            syncs = client.get(f"/v1/connections/conn-{i}/syncs").json()["items"]
            assert syncs and {s["phase"] for s in syncs} == {"succeeded"}


def test_an_event_that_fails_alone_is_split_out_and_dead_letters_without_its_neighbours(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = workers.ingest.handle.parse_event  # type: ignore[attr-defined]

    def buggy(raw: bytes | str, message_id: str, received_at: Any) -> Event:
        if message_id == POISONED:
            raise RuntimeError("fold bug: this one event cannot be folded")
        return parse(raw, message_id, received_at)

    monkeypatch.setattr(workers.ingest.handle, "parse_event", buggy)
    deliveries = [Delivery(f"msg_conn_{i}", json.dumps(connection_event(minutes=i))) for i in range(3)]
    deliveries += [Delivery(f"msg_read_{i}", json.dumps(read_completed(minutes=10 + i))) for i in range(6)]
    assert send_together(settings, deliveries) == [202] * 9
    messages = queued_messages(redis.Redis.from_url(settings.redis_url), settings.redis_namespace, "backfill")
    assert any(POISONED in [item[0] for item in m.args[0]] and len(m.args[0]) > 1 for m in messages)

    with admin_client(settings) as client, running_worker(settings):
        dead = wait_for(
            lambda: (lambda page: page if page["total"] >= 1 else None)(client.get("/v1/admin/dead-letters").json()),
            message="a dead letter",
        )
        processed = client.get("/v1/events", params={"outcome": "processed", "limit": "100"}).json()["items"]
        assert {e["id"] for e in processed} == {d.message_id for d in deliveries} - {POISONED}
        (letter,) = dead["items"]
        assert (letter["event_id"], letter["actor"], letter["event_type"]) == (POISONED, FOLD_ACTOR, "read.completed")
        assert letter["last_error"] == "RuntimeError: fold bug: this one event cannot be folded"

        monkeypatch.undo()  # the fix is deployed
        assert client.post("/v1/admin/dead-letters/redrive", json={"all": True}).json()["redriven"] == 1
        wait_for(
            lambda: len(client.get("/v1/events", params={"outcome": "processed", "limit": "100"}).json()["items"]) == 9,
            message="the split-out event folded after the fix",
        )
