"""Retention: old raw bodies go, the rows stay as tombstones that still recognise a redelivery."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import fakeredis
from sqlmodel import Session

from schemas.ops import ReplayFilters
from schemas.settings import Settings
from tests.support.builders import connection_event, read_completed
from tests.support.ops_support import cli, store
from tests.support.workload import Delivery
from workers.ingest.handle import handle_webhook
from workers.jobs.retention import PRUNE_JOB
from workers.ledger.tables import WebhookEvent
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.ops.rebuild import dump_ledger
from workers.ops.replay import count_selection
from workers.runtime.db import make_engine, upgrade
from workers.runtime.periodic import PeriodicRunner

NOW = datetime.now(UTC)


def stored_events(sqlite_url: str) -> Settings:
    upgrade(sqlite_url)
    settings = Settings(database_url=sqlite_url, raw_event_retention_days=90, _env_file=None)
    store(settings, [Delivery("old", json.dumps(connection_event(minutes=0)))], NOW - timedelta(days=91))
    store(settings, [Delivery("recent", json.dumps(read_completed(minutes=10)))], NOW - timedelta(days=89))
    return settings


def test_prune_removes_old_bodies_and_keeps_the_rows_and_the_ledger(sqlite_url: str) -> None:
    settings = stored_events(sqlite_url)
    engine = make_engine(sqlite_url)
    ledger = dump_ledger(engine)
    assert "1 raw events received before" in cli(settings, "prune", "--dry-run").output
    result = cli(settings, "prune")
    assert result.exit_code == 0 and result.output.startswith("1 raw events received before")
    with Session(engine) as session:
        old, recent = session.get(WebhookEvent, "old"), session.get(WebhookEvent, "recent")
    assert (
        old is not None and old.body is None and (old.event_type, old.outcome) == ("connection.connected", "processed")
    )
    assert recent is not None and recent.body is not None
    assert dump_ledger(engine) == ledger
    assert "0 raw events" in cli(settings, "prune").output


def test_a_pruned_event_is_still_a_duplicate_and_cannot_be_replayed(sqlite_url: str) -> None:
    settings = stored_events(sqlite_url)
    cli(settings, "prune")
    engine = make_engine(sqlite_url)
    again = handle_webhook(engine, None, "old", json.dumps(connection_event()), NOW.isoformat())
    assert again.status == "duplicate"
    assert count_selection(engine, ReplayFilters(event_id=["old", "recent"])) == (1, 1)


def test_the_workers_prune_hourly_as_a_periodic_job(sqlite_url: str) -> None:
    settings = stored_events(sqlite_url)
    assert PRUNE_JOB in periodic_jobs()
    runtime = WorkerRuntime(settings=settings, engine=make_engine(sqlite_url), feed=None)
    runner = PeriodicRunner(runtime, fakeredis.FakeRedis(), [PRUNE_JOB])
    assert runner.run_if_due(PRUNE_JOB) is True
    assert runner.run_if_due(PRUNE_JOB) is False  # once per hour, across every worker process
    with Session(runtime.engine) as session:
        assert session.get(WebhookEvent, "old").body is None  # type: ignore[union-attr]
    off = replace(runtime, settings=settings.model_copy(update={"raw_event_retention_days": 0}))
    assert PRUNE_JOB.interval(off) == 0
