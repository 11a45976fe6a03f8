"""Dead letters on a real worker and the real Redis: a fold bug sends one event type to the dead-letter
queue after its retries; after the fix a redrive folds them and nothing is lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import workers.ingest.handle
from schemas.events import Event
from schemas.settings import Settings
from tests.support.builders import connection_event, read_completed
from tests.support.ops_support import admin_client, cli, ops_settings, running_worker
from tests.support.services import wait_for
from tests.support.workload import Delivery, signed
from workers.ops.deadletters import DeadLetters

pytestmark = pytest.mark.redis

BUGGY_TYPE = "read.completed"


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, namespace: str) -> Settings:
    return ops_settings(sqlite_url, redis_url, namespace)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(settings) as test_client:
        yield test_client


def post(client: TestClient, body: dict[str, Any], message_id: str) -> None:
    delivery = Delivery(message_id, json.dumps(body))
    answer = client.post("/webhooks/codat", content=delivery.body, headers=signed(delivery))
    assert answer.status_code == 202, answer.text


def events(client: TestClient, **query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/events", params={**query, "limit": "500"}).json()["items"]
    return items


@pytest.fixture
def fold_bug(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A deploy whose fold raises for every `read.completed` (undo() is the fix)."""
    parse = workers.ingest.handle.parse_event  # type: ignore[attr-defined]

    def buggy(raw: bytes | str, message_id: str, received_at: Any) -> Event:
        event = parse(raw, message_id, received_at)
        if event.event_type == BUGGY_TYPE:
            raise RuntimeError(f"fold bug: cannot fold {event.event_type}")
        return event

    monkeypatch.setattr(workers.ingest.handle, "parse_event", buggy)
    return monkeypatch


def test_a_fold_bug_dead_letters_one_type_and_a_redrive_after_the_fix_folds_every_one(
    settings: Settings, client: TestClient, fold_bug: pytest.MonkeyPatch
) -> None:
    connections = [f"conn-{i}" for i in range(6)]
    for i, connection in enumerate(connections):
        post(client, connection_event(minutes=i, connection_id=connection), f"msg_conn_{i}")
        post(client, read_completed(minutes=30 + i, connection_id=connection), f"msg_read_{i}")
    poison = {"id": "p", "eventType": "read.completed.initial", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    post(client, poison, "msg_poison")

    with running_worker(settings):
        dead = wait_for(
            lambda: (lambda page: page if page["total"] == 6 else None)(client.get("/v1/admin/dead-letters").json()),
            message="six dead letters",
        )
        # Everything else went through: the other type, and the poison input stored as failed.
        assert {e["id"] for e in events(client, outcome="processed")} == {f"msg_conn_{i}" for i in range(6)}
        assert [e["id"] for e in events(client, outcome="failed")] == ["msg_poison"]
        letter = dead["items"][0]
        assert letter["event_id"].startswith("msg_read_")
        assert (letter["event_type"], letter["company_id"], letter["attempts"]) == (
            BUGGY_TYPE,
            connection_event()["payload"]["referenceCompany"]["id"],
            3,
        )
        assert letter["last_error"] == f"RuntimeError: fold bug: cannot fold {BUGGY_TYPE}"
        detail = client.get(f"/v1/admin/dead-letters/{letter['event_id']}").json()
        assert "fold bug" in detail["traceback"] and detail["id"] == letter["id"]
        listed = cli(settings, "dlq", "list")
        assert "6 dead letters" in listed.output and "msg_read_0" in listed.output

        fold_bug.undo()  # the fix is deployed
        one = cli(settings, "dlq", "redrive", "msg_read_0")
        assert "1 dead letters redriven" in one.output
        rest = client.post("/v1/admin/dead-letters/redrive", json={"all": True}).json()
        assert rest["redriven"] == 5 and sorted(rest["event_ids"]) == [f"msg_read_{i}" for i in range(1, 6)]
        wait_for(lambda: len(events(client, outcome="processed")) == 12, message="all twelve folded")

    assert client.get("/v1/admin/dead-letters").json()["total"] == 0
    assert len(events(client)) == 13
    for connection in connections:
        syncs = client.get(f"/v1/connections/{connection}/syncs").json()["items"]
        assert {s["phase"] for s in syncs} == {"succeeded"}


def test_redrive_and_purge_need_a_selection_and_purge_removes_only_what_it_is_told(
    settings: Settings, client: TestClient, fold_bug: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        post(client, read_completed(minutes=i), f"msg_read_{i}")
    with running_worker(settings):
        wait_for(lambda: client.get("/v1/admin/dead-letters").json()["total"] == 3, message="three dead letters")
    assert client.post("/v1/admin/dead-letters/redrive", json={}).status_code == 400
    assert client.post("/v1/admin/dead-letters/purge", json={"ids": ["msg_read_1"]}).json() == {"purged": 1}
    assert cli(settings, "dlq", "purge", "msg_read_2", "--yes").output.strip() == "1 dead letters purged"
    letters = DeadLetters(*_redis(settings))
    assert [letter.event_id for letter in letters.newest()] == ["msg_read_0"]
    assert client.get("/v1/admin/dead-letters/nope").status_code == 404
    assert cli(settings, "dlq", "show", "msg_read_0").output.startswith("id: ")


def _redis(settings: Settings) -> tuple[Any, str]:
    import redis

    return redis.Redis.from_url(settings.redis_url), settings.redis_namespace
