"""The targeted reconcile's schedule: a Linked connection's data type turning overdue (by the fold or the freshness
check) asks for its company, served at most once an hour, on SQLite and PostgreSQL; the job is on with an API key
whatever `SYNCTRACK_RECONCILE_EVERY` says."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.settings import Settings
from tests.support.builders import BASE_TIME, COMPANY, connection_event, read_completed
from workers.codat.overdue_reconcile import OVERDUE_RECONCILE_JOB, claim_due, overdue_interval, run_targeted
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.jobs.freshness_check import check_freshness
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade

NOW = datetime.now(UTC).replace(microsecond=0)
FIRST, SECOND = "0b7c1e9a-1111-4d2e-9a55-6f0c2a9d0001", "0b7c1e9a-2222-4d2e-9a55-6f0c2a9d0002"


def ago(hours: float) -> float:
    return ((NOW - timedelta(hours=hours)) - BASE_TIME).total_seconds() / 60


@pytest.fixture
def runtime(database_url: str) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield WorkerRuntime(Settings(database_url=database_url, _env_file=None), engine, None)
    engine.dispose()


def deliver(runtime: WorkerRuntime, *bodies: dict[str, Any]) -> None:
    requests = [FoldRequest(f"msg_{uuid.uuid4().hex}", json.dumps(b), NOW.isoformat()) for b in bodies]
    handle_webhooks(runtime.engine, None, requests, runtime.freshness)


def linked_with_invoices(runtime: WorkerRuntime, connection_id: str, synced_hours_ago: float) -> None:
    deliver(
        runtime,
        connection_event(minutes=ago(synced_hours_ago + 1), connection_id=connection_id, platform="Xero"),
        read_completed([("invoices", "Complete")], minutes=ago(synced_hours_ago), connection_id=connection_id),
    )


def test_a_data_type_turning_overdue_asks_for_its_company_once_an_hour(runtime: WorkerRuntime) -> None:
    linked_with_invoices(runtime, FIRST, synced_hours_ago=20)  # overdue 4 h from now (default threshold 24 h)
    linked_with_invoices(runtime, SECOND, synced_hours_ago=19.5)  # 30 minutes later
    check_freshness(runtime, NOW)
    assert claim_due(runtime.engine, NOW) == []  # both fresh: nothing asked

    at = NOW + timedelta(hours=4, seconds=1)
    assert check_freshness(runtime, at) == 1
    assert claim_due(runtime.engine, at) == [COMPANY]
    assert claim_due(runtime.engine, at + timedelta(seconds=1)) == []  # served

    later = NOW + timedelta(hours=4, minutes=30, seconds=1)
    assert check_freshness(runtime, later) == 1  # the second connection turns overdue
    assert claim_due(runtime.engine, later) == []  # within the hour: it waits
    assert claim_due(runtime.engine, at + timedelta(minutes=59)) == []
    assert claim_due(runtime.engine, at + timedelta(hours=1)) == [COMPANY]  # then it is served
    assert claim_due(runtime.engine, at + timedelta(hours=2)) == []  # once


def test_a_connection_first_seen_overdue_asks_for_nothing(runtime: WorkerRuntime) -> None:
    linked_with_invoices(runtime, FIRST, synced_hours_ago=30)
    check_freshness(runtime, NOW)
    assert claim_due(runtime.engine, NOW + timedelta(hours=2)) == []


def test_a_run_with_nothing_asked_reconciles_nothing(runtime: WorkerRuntime) -> None:
    # No Codat is configured: a run that called it would fail.
    assert run_targeted(runtime, NOW) == "companies=0"


def test_the_targeted_job_runs_with_an_api_key_even_when_periodic_reconciliation_is_off(
    runtime: WorkerRuntime,
) -> None:
    assert OVERDUE_RECONCILE_JOB in periodic_jobs()
    with_key = Settings(codat_api_key="k", reconcile_every_seconds=0, _env_file=None)
    assert overdue_interval(WorkerRuntime(with_key, runtime.engine, None)) == 20
    without_key = Settings(_env_file=None)
    assert overdue_interval(WorkerRuntime(without_key, runtime.engine, None)) == 0
    off = Settings(codat_api_key="k", reconcile_overdue_check_seconds=0, _env_file=None)
    assert overdue_interval(WorkerRuntime(off, runtime.engine, None)) == 0
