"""The freshness check and the fold's own freshness announcements, over a ledger filled through the
worker's path (`handle_webhook`), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from schemas.settings import Settings
from tests.support.builders import BASE_TIME, CONNECTION, connection_event, read_completed
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.jobs.freshness_check import FRESHNESS_JOB, check_freshness
from workers.ledger.changes import ChangeFeed
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(hours: float) -> float:
    return ((NOW - timedelta(hours=hours)) - BASE_TIME).total_seconds() / 60


@pytest.fixture
def runtime(database_url: str) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    engine = make_engine(database_url)
    settings = Settings(database_url=database_url, _env_file=None)
    yield WorkerRuntime(settings, engine, ChangeFeed(fakeredis.FakeRedis(), "t", 1000))
    engine.dispose()


def deliver(runtime: WorkerRuntime, body: dict[str, Any], *, publish: bool = True) -> str:
    message_id = f"msg_{uuid.uuid4().hex}"
    feed = runtime.feed if publish else None
    request = FoldRequest(message_id, json.dumps(body), NOW.isoformat())
    handle_webhooks(runtime.engine, feed, [request], runtime.freshness)
    return message_id


def announced(runtime: WorkerRuntime) -> list[tuple[str, dict[str, Any]]]:
    assert runtime.feed is not None
    entries = runtime.feed.redis.xrange(runtime.feed.key)
    runtime.feed.redis.delete(runtime.feed.key)
    return [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]  # type: ignore[union-attr,index]


def freshness_events(runtime: WorkerRuntime) -> list[dict[str, Any]]:
    return [data for name, data in announced(runtime) if name == "connection.freshness_changed"]


def test_a_new_connection_is_announced_with_no_previous_freshness(runtime: WorkerRuntime) -> None:
    message_id = deliver(runtime, connection_event(minutes=ago(1)))
    (changed,) = freshness_events(runtime)
    assert (changed["previous"], changed["current"]) == (None, "pending")
    assert changed["overdue_data_types"] == []
    assert changed["event_id"] == message_id
    assert changed["connection"]["id"] == CONNECTION
    assert changed["connection"]["freshness"] == "pending"


def test_the_check_announces_what_the_clock_changed_once(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=ago(30)))
    deliver(runtime, read_completed([("invoices", "Complete")], minutes=ago(2)))
    announced(runtime)

    assert check_freshness(runtime, now=NOW) == 0
    assert announced(runtime) == [], "nothing changed since the fold announced it"

    assert check_freshness(runtime, now=NOW + timedelta(hours=23)) == 1
    (updated_name, updated), (changed_name, changed) = announced(runtime)
    assert updated_name == "connection.updated"
    assert (updated["freshness"], updated["overdue_data_types"], updated["event_id"]) == ("overdue", ["invoices"], None)
    assert changed_name == "connection.freshness_changed"
    assert (changed["previous"], changed["current"]) == ("fresh", "overdue")
    assert changed["overdue_data_types"] == ["invoices"]
    assert changed["event_id"] is None
    assert changed["connection"] == {k: v for k, v in updated.items() if k != "event_id"}

    assert check_freshness(runtime, now=NOW + timedelta(hours=24)) == 0
    assert announced(runtime) == []


def test_a_sync_result_that_makes_a_connection_fresh_again_is_announced_at_once(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=ago(80)))
    deliver(runtime, read_completed([("invoices", "Complete"), ("bills", "Complete")], minutes=ago(20)))
    assert [e["current"] for e in freshness_events(runtime)] == ["never", "fresh"]
    assert check_freshness(runtime, now=NOW + timedelta(hours=5)) == 1
    assert [e["current"] for e in freshness_events(runtime)] == ["overdue"]

    message_id = deliver(runtime, read_completed([("invoices", "Complete"), ("bills", "Complete")], minutes=ago(0)))
    (changed,) = freshness_events(runtime)
    assert (changed["previous"], changed["current"], changed["event_id"]) == ("overdue", "fresh", message_id)
    assert check_freshness(runtime, now=NOW + timedelta(hours=5)) == 0


def test_a_disconnect_pauses_the_connection_at_once(runtime: WorkerRuntime) -> None:
    deliver(runtime, connection_event(minutes=ago(5)))
    deliver(runtime, read_completed(minutes=ago(4)))
    announced(runtime)
    deliver(runtime, connection_event("connection.disconnected", minutes=ago(1)))
    (changed,) = freshness_events(runtime)
    assert (changed["previous"], changed["current"]) == ("fresh", "paused")
    assert changed["connection"]["expected_by"] is None


def test_a_connection_the_check_has_never_seen_gets_no_previous(runtime: WorkerRuntime) -> None:
    from sqlmodel import Session, delete

    from workers.ledger.tables import FreshnessRecord

    deliver(runtime, connection_event(minutes=ago(1)), publish=False)
    with Session(runtime.engine) as session, session.begin():
        session.exec(delete(FreshnessRecord))
    assert check_freshness(runtime, now=NOW) == 1
    (changed,) = freshness_events(runtime)
    assert (changed["previous"], changed["current"]) == (None, "pending")


def test_the_check_runs_in_every_worker_every_minute_and_zero_turns_it_off(runtime: WorkerRuntime) -> None:
    assert FRESHNESS_JOB in periodic_jobs()
    assert FRESHNESS_JOB.interval(runtime) == 60
    runtime.settings = runtime.settings.model_copy(update={"freshness_check_seconds": 0})
    assert FRESHNESS_JOB.interval(runtime) == 0
