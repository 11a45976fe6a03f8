"""The receiver's choice of lane: a webhook Codat generated longer ago than `SYNCTRACK_LIVE_WINDOW` goes to the
backfill queue, a recent one (and a legacy alert, which carries no generation time) to the live queue; a window of
0 keeps every webhook live. `/v1/admin/queues` shows where they wait. Embedded (`synctrack dev`'s in-process
Redis) and on the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fakeredis import FakeRedis
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import connection_event, fixture, iso, signed_request
from workers.runtime.broker import FOLD_BACKFILL_ACTOR, FOLD_BATCH_ACTOR, embedded_server
from workers.runtime.db import upgrade
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE, queued_messages


@pytest.fixture(params=["embedded", "redis"])
def settings(request: pytest.FixtureRequest, embedded_settings: Settings) -> Iterator[Settings]:
    upgrade(embedded_settings.database_url)
    if request.param == "embedded":
        yield embedded_settings
        return
    redis_url = request.getfixturevalue("redis_url")
    namespace = request.getfixturevalue("namespace")
    yield embedded_settings.model_copy(update={"embedded": False, "redis_url": redis_url, "redis_namespace": namespace})


def queued(settings: Settings, queue: str) -> list[tuple[str, str]]:
    """(actor, event id) of every event waiting on `queue`."""
    client = FakeRedis(server=embedded_server()) if settings.embedded else redis.Redis.from_url(settings.redis_url)
    return [
        (message.actor_name, item[0])
        for message in queued_messages(client, settings.redis_namespace, queue)
        for item in message.args[0]
    ]


def generated(ago: timedelta, event_id: str) -> dict[str, Any]:
    body = connection_event(event_id=event_id)
    body["generatedDate"] = iso(datetime.now(UTC) - ago)
    return body


def post(client: TestClient, body: dict[str, Any]) -> str:
    raw, headers = signed_request(body)
    answer = client.post("/webhooks/codat", content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    return headers["webhook-id"]


def test_an_old_webhook_goes_to_the_backfill_queue_and_a_recent_one_to_the_live_queue(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        old = post(client, generated(timedelta(hours=3), "old"))
        recent = post(client, generated(timedelta(minutes=2), "recent"))
        legacy = post(client, fixture("legacy.DataSyncCompleted"))
        queues = {item["queue"]: item for item in client.get("/v1/admin/queues", headers=ADMIN_HEADERS).json()["items"]}

    assert queued(settings, BACKFILL_QUEUE) == [(FOLD_BACKFILL_ACTOR, old)]
    assert sorted(queued(settings, WEBHOOK_QUEUE)) == sorted([(FOLD_BATCH_ACTOR, recent), (FOLD_BATCH_ACTOR, legacy)])
    assert queues["backfill"]["depth"] == 1 and queues["webhooks"]["depth"] == 2
    assert queues["backfill"]["oldest_age_seconds"] >= 0 and queues["backfill"]["dead_letters"] == 0
    assert (queues["ops"]["depth"], queues["ops"]["oldest_age_seconds"]) == (0, None)


def test_the_live_window_is_a_setting_and_zero_keeps_every_webhook_live(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"live_window_seconds": 0}))) as client:
        old = post(client, generated(timedelta(days=30), "old"))
    assert queued(settings, BACKFILL_QUEUE) == []
    assert queued(settings, WEBHOOK_QUEUE) == [(FOLD_BATCH_ACTOR, old)]


def test_the_live_window_reads_a_duration() -> None:
    assert Settings(_env_file=None, SYNCTRACK_LIVE_WINDOW="1h").live_window_seconds == 3600
    assert Settings(_env_file=None).live_window_seconds == 600


def test_the_queues_answer_admins_only(embedded_settings: Settings) -> None:
    upgrade(embedded_settings.database_url)
    with TestClient(create_app(embedded_settings)) as client:
        answer = client.get("/v1/admin/queues")
    assert answer.status_code == 401 and answer.json()["error"]
