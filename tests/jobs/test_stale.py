"""Stale syncs: the periodic job over a ledger filled through the worker's own path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import fakeredis
import pytest
from sqlmodel import Session, select

from schemas.settings import Settings
from tests.support.builders import CONNECTION, at, connection_event, iso, read_completed
from workers.ingest.handle import handle_webhook
from workers.jobs.stale import mark_stale_syncs, stale_job
from workers.ledger.changes import ChangeFeed
from workers.ledger.tables import Sync
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade

HOUR = 3600


@pytest.fixture
def runtime(database_url: str) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    engine = make_engine(database_url)
    settings = Settings(database_url=database_url, sync_stale_after_seconds=6 * HOUR, _env_file=None)
    feed = ChangeFeed(fakeredis.FakeRedis(), "t", 1000)
    yield WorkerRuntime(settings, engine, feed)
    engine.dispose()


def deliver(runtime: WorkerRuntime, body: dict[str, Any], received: datetime) -> str:
    message_id = f"msg_{uuid.uuid4().hex}"
    handle_webhook(runtime.engine, None, message_id, json.dumps(body), iso(received))
    return message_id


def syncs(runtime: WorkerRuntime) -> dict[str, str]:
    with Session(runtime.engine) as session:
        return {row.id: row.phase for row in session.exec(select(Sync)).all()}


def announced(runtime: WorkerRuntime) -> list[tuple[str, dict[str, Any]]]:
    assert runtime.feed is not None
    entries = runtime.feed.redis.xrange(runtime.feed.key)
    return [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]  # type: ignore[union-attr,index]


def test_a_sync_active_longer_than_the_limit_is_marked_stale_and_announced(runtime: WorkerRuntime) -> None:
    message_id = deliver(runtime, connection_event(minutes=0), received=at(0))
    assert list(syncs(runtime).values()) == ["active"]

    assert mark_stale_syncs(runtime, now=at(60 * 6 + 1)) == 1

    assert list(syncs(runtime).values()) == ["stale"]
    (sync_event, sync), (conn_event, conn), (health_event, health) = announced(runtime)
    assert sync_event == "sync.failed"
    assert sync["phase"] == "stale"
    assert sync["id"] == f"{message_id}:{CONNECTION}:*"
    assert sync["requested_at"] == iso(at(0))
    assert sync["event_id"] is None
    assert conn_event == "connection.updated"
    assert conn["id"] == CONNECTION
    assert conn["sync_active"] is False
    assert conn["event_id"] is None
    assert health_event == "connection.health_changed"  # no sync is running any more: nothing to wait for
    assert (health["previous"], health["current"], health["next_action"]) == ("syncing", "healthy", "none")
    assert health["connection"]["health"] == "healthy" and health["event_id"] is None


def test_a_sync_within_the_limit_is_left_active(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=0), received=at(0))
    assert mark_stale_syncs(runtime, now=at(60 * 6 - 1)) == 0
    assert list(syncs(runtime).values()) == ["active"]
    assert announced(runtime) == []


def test_an_old_request_that_arrived_recently_is_not_stale_yet(runtime: WorkerRuntime) -> None:
    """A replayed week-old `connection.connected` has not been waited on for six hours."""
    deliver(runtime, connection_event(minutes=0), received=at(60 * 24 * 7))
    assert mark_stale_syncs(runtime, now=at(60 * 24 * 7 + 60)) == 0
    assert list(syncs(runtime).values()) == ["active"]


def test_the_connection_stays_active_while_another_of_its_syncs_is(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=0), received=at(0))
    deliver(runtime, connection_event("connection.reconnected", minutes=60 * 5), received=at(60 * 5))
    assert mark_stale_syncs(runtime, now=at(60 * 6 + 1)) == 1
    assert sorted(syncs(runtime).values()) == ["active", "stale"]
    assert [name for name, _ in announced(runtime)] == ["sync.failed"]


def test_a_late_completion_closes_a_stale_sync(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=0), received=at(0))
    mark_stale_syncs(runtime, now=at(60 * 7))
    deliver(runtime, read_completed(minutes=60 * 8), received=at(60 * 8))
    assert set(syncs(runtime).values()) == {"succeeded"}


def test_marking_twice_announces_once(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=0), received=at(0))
    assert mark_stale_syncs(runtime, now=at(60 * 7)) == 1
    assert mark_stale_syncs(runtime, now=at(60 * 8)) == 0
    assert [name for name, _ in announced(runtime)] == [
        "sync.failed",
        "connection.updated",
        "connection.health_changed",
    ]


def test_the_stale_limit_is_read_from_sync_stale_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTRACK_SYNC_STALE_AFTER", "90m")
    assert Settings(_env_file=None).sync_stale_after_seconds == 90 * 60
    monkeypatch.setenv("SYNCTRACK_SYNC_STALE_AFTER", "120")
    assert Settings(_env_file=None).sync_stale_after_seconds == 120
    monkeypatch.delenv("SYNCTRACK_SYNC_STALE_AFTER")
    assert Settings(_env_file=None).sync_stale_after_seconds == 6 * HOUR


def test_the_job_runs_in_every_worker_and_is_off_when_either_setting_is_zero(runtime: WorkerRuntime) -> None:
    job = stale_job(None)
    assert job.name in [j.name for j in periodic_jobs()]
    assert job.interval(runtime) == 60
    runtime.settings = runtime.settings.model_copy(update={"sync_stale_after_seconds": 0})
    assert job.interval(runtime) == 0
    runtime.settings = runtime.settings.model_copy(
        update={"sync_stale_check_seconds": 0, "sync_stale_after_seconds": 9}
    )
    assert job.interval(runtime) == 0
