"""Replay of stored webhooks: selection by every selector (CLI and admin API), dry run, idempotence on a
real worker, interruption and resume. Real Redis; SQLite, and PostgreSQL where the database matters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from schemas.settings import Settings
from tests.support.builders import at, connection_event, iso, legacy_alert, read_completed
from tests.support.ops_support import admin_client, cli, ops_settings, running_worker, store, wait_for_job
from tests.support.workload import Delivery, webhook_mix
from workers.ops.rebuild import dump_ledger
from workers.ops.replay import ReplayRunner
from workers.runtime.broker import FOLD_STORED_ACTOR
from workers.runtime.db import make_engine
from workers.runtime.redis_queues import BACKFILL_QUEUE, queued_messages

pytestmark = pytest.mark.redis

A, B = "company-a", "company-b"
C1, C2 = "connection-1", "connection-2"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
T1, T2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)


def delivery(name: str, body: dict[str, Any]) -> Delivery:
    return Delivery(name, json.dumps(body))


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, namespace: str) -> Settings:
    return ops_settings(sqlite_url, redis_url, namespace)


@pytest.fixture
def stored(settings: Settings) -> None:
    """Six stored events, received at T0, T1 and T2; e6 could not be parsed (outcome failed)."""
    broken = {"id": "x", "eventType": "read.completed", "generatedDate": iso(at(40)), "payload": {}}
    broken["payload"] = {"referenceCompany": {"id": A}}
    store(
        settings,
        [
            delivery("e1", connection_event("connection.connected", minutes=0, company_id=A, connection_id=C1)),
            delivery("e2", read_completed(minutes=10, company_id=A, connection_id=C1)),
        ],
        T0,
    )
    store(
        settings,
        [
            delivery("e3", connection_event("connection.connected", minutes=20, company_id=B, connection_id=C2)),
            delivery("e4", read_completed(minutes=30, company_id=B, connection_id=C2)),
        ],
        T1,
    )
    legacy = legacy_alert(
        "DataConnectionStatusChanged",
        {"dataConnectionId": C2, "newStatus": "Linked", "oldStatus": "PendingAuth"},
        company_id=B,
        connection_id=C2,
    )
    store(settings, [delivery("e5", legacy), delivery("e6", broken)], T2)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with admin_client(settings) as test_client:
        yield test_client


def enqueued_event_ids(settings: Settings) -> list[str]:
    """The event ids of the replay messages waiting in the backfill queue, in queue order."""
    messages = queued_messages(redis.Redis.from_url(settings.redis_url), settings.redis_namespace, BACKFILL_QUEUE)
    assert all(m.actor_name == FOLD_STORED_ACTOR for m in messages)  # stored events, bodies loaded by the worker
    return [event_id for m in messages for event_id in m.args[0]]


SELECTIONS = [
    (["--event-id", "e1", "--event-id", "e4"], {"event_id": ["e1", "e4"]}, {"e1", "e4"}),
    (["--company", A], {"company_id": A}, {"e1", "e2", "e6"}),
    (["--connection", C2], {"connection_id": [C2]}, {"e3", "e4", "e5"}),
    (["--event-type", "read.completed"], {"event_type": "read.completed"}, {"e2", "e4", "e6"}),
    (["--outcome", "failed"], {"outcome": ["failed"]}, {"e6"}),
    (["--received-from", T1.isoformat()], {"received_from": T1.isoformat()}, {"e3", "e4", "e5", "e6"}),
    (["--received-to", T1.isoformat()], {"received_to": T1.isoformat()}, {"e1", "e2"}),
    (
        ["--generated-from", iso(at(15)), "--generated-to", iso(at(35))],
        {"generated_from": iso(at(15)), "generated_to": iso(at(35))},
        {"e3", "e4"},
    ),
    (["--company", B, "--event-type", "read.completed"], {"company_id": B, "event_type": "read.completed"}, {"e4"}),
]


@pytest.mark.parametrize(("args", "body", "expected"), SELECTIONS)
def test_each_selector_replays_exactly_the_events_it_selects(
    settings: Settings, stored: None, client: TestClient, args: list[str], body: dict[str, Any], expected: set[str]
) -> None:
    dry = client.post("/v1/admin/replay", json={**body, "dry_run": True}).json()
    assert (dry["count"], {e["id"] for e in dry["sample"]}) == (len(expected), expected)

    result = cli(settings, "replay", *args, "--rate", "0")
    assert result.exit_code == 0, result.output
    assert sorted(enqueued_event_ids(settings)) == sorted(expected)


def test_a_dry_run_counts_and_samples_without_enqueueing(settings: Settings, stored: None, client: TestClient) -> None:
    answer = client.post("/v1/admin/replay", json={"all": True, "dry_run": True, "sample": 2})
    assert answer.status_code == 200
    assert (answer.json()["count"], [e["id"] for e in answer.json()["sample"]]) == (6, ["e1", "e2"])
    result = cli(settings, "replay", "--all", "--dry-run")
    assert "6 events would be replayed" in result.output
    assert enqueued_event_ids(settings) == []
    assert client.get("/v1/admin/replays").json()["items"] == []


def test_a_replay_without_any_selector_must_say_all(settings: Settings, client: TestClient) -> None:
    answer = client.post("/v1/admin/replay", json={})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_parameter"
    assert "all=true" in answer.json()["detail"]
    assert client.post("/v1/admin/replay", json={"colour": "red", "all": True}).status_code == 400
    assert cli(settings, "replay").exit_code != 0


@pytest.fixture
def any_database_settings(database_url: str, redis_url: str, namespace: str) -> Settings:
    return ops_settings(database_url, redis_url, namespace)


def test_replaying_everything_twice_leaves_the_ledger_exactly_as_it_was(any_database_settings: Settings) -> None:
    settings = any_database_settings
    store(settings, webhook_mix(300, duplicate_share=0.1, seed=5))
    engine = make_engine(settings.database_url)
    before = dump_ledger(engine)
    assert before["syncs"]
    with running_worker(settings), admin_client(settings) as client:
        for _ in range(2):
            answer = client.post("/v1/admin/replay", json={"all": True, "rate": 0})
            assert answer.status_code == 202
            job = wait_for_job(client, answer.json()["id"])
            assert (job["total"], job["done"], job["folded"], job["dead_lettered"]) == (300, 300, 300, 0)
            assert dump_ledger(engine) == before
    engine.dispose()


def test_an_interrupted_replay_resumes_where_it_stopped(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = store(settings, webhook_mix(250, seed=6))
    calls = {"n": 0}
    enqueue = ReplayRunner._enqueue

    def interrupted_on_the_third_batch(self: ReplayRunner, job_id: str, event_ids: list[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        enqueue(self, job_id, event_ids)

    monkeypatch.setattr(ReplayRunner, "_enqueue", interrupted_on_the_third_batch)
    first = cli(settings, "replay", "--all", "--rate", "1000")  # batches of 100
    assert first.exit_code == 130
    assert "interrupted at 200/250" in first.output
    job_id = first.output.split("synctrack replay --resume ")[1].split()[0]
    assert len(enqueued_event_ids(settings)) == 200

    resumed = cli(settings, "replay", "--resume", job_id, "--rate", "0")
    assert resumed.exit_code == 0, resumed.output
    assert f"replay {job_id} completed: 250 events enqueued" in resumed.output
    assert sorted(enqueued_event_ids(settings)) == sorted(ids)  # each exactly once


def test_a_replay_nobody_is_running_any_more_shows_as_interrupted_and_resumes_on_the_workers(
    settings: Settings, stored: None
) -> None:
    with admin_client(settings) as client:
        job = client.post("/v1/admin/replay", json={"company_id": A}).json()
        # The workers are down: the job waits. Mark it as a runner that died mid-way would leave it.
        engine = make_engine(settings.database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE replay_jobs SET status = 'running' WHERE id = ?", (job["id"],))
        engine.dispose()
        assert client.get(f"/v1/admin/replays/{job['id']}").json()["status"] == "interrupted"
        assert client.post(f"/v1/admin/replays/{job['id']}/resume").status_code == 202
        with running_worker(settings):
            finished = wait_for_job(client, job["id"])
        assert (finished["total"], finished["folded"]) == (3, 3)
        assert client.post(f"/v1/admin/replays/{job['id']}/resume").status_code == 409
        assert client.get("/v1/admin/replays/rpl_nope").status_code == 404


def test_a_replay_waits_on_the_backfill_queue_and_leaves_the_live_queue_to_live_webhooks(
    settings: Settings, stored: None, client: TestClient
) -> None:
    assert cli(settings, "replay", "--all", "--rate", "0").exit_code == 0
    queues = {item["queue"]: item for item in client.get("/v1/admin/queues").json()["items"]}
    assert queues["backfill"]["depth"] >= 1 and queues["backfill"]["oldest_age_seconds"] is not None
    assert (queues["webhooks"]["depth"], queues["webhooks"]["oldest_age_seconds"]) == (0, None)
