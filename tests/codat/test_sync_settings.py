"""Reading Codat's sync settings: when they are read (import, reconciliation, a new company, the daily job),
how often Codat is called for them, and that nothing is read without an API key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine
from sqlmodel import Session

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.codat.conftest import KEY
from tests.support.builders import company_event, connection_event
from workers.codat.client import CodatClient
from workers.codat.import_jobs import create_job
from workers.codat.importer import Importer
from workers.codat.reconcile import reconcile
from workers.codat.sync_settings import SETTINGS_JOB, declare_sync_settings, refresh_due, refresh_settings
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.schedules import load_schedules
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade
from workers.runtime.redis_queues import OPS_QUEUE

NOW = datetime.now(UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(api_key=KEY)) as server:
        yield server


def settings_for(fake: FakeCodatServer, **extra: Any) -> Settings:
    return Settings(codat_base_url=fake.url, codat_api_key=KEY, _env_file=None, **extra)


def seed(fake: FakeCodatServer, count: int) -> list[str]:
    specs = [{"platforms": ["hsbc"]} for _ in range(count)]
    return [c["id"] for c in fake.control.seed(companies=specs, announce=False, initial_read=False)]


def settings_reads(fake: FakeCodatServer) -> list[str]:
    return [r["path"] for r in fake.control.requests() if r["path"].endswith("/syncSettings")]


def company_path(company_id: str) -> str:
    return f"/companies/{company_id}/syncSettings"


def stored(engine: Engine, company_id: str) -> tuple[dict[str, float], dict[str, float]]:
    with Session(engine) as session:
        schedules = load_schedules(session, [company_id])[company_id]
    return dict(schedules.client), dict(schedules.company)


def in_ledger(engine: Engine, *company_ids: str) -> None:
    requests = [
        FoldRequest(f"msg_{company_id}", json.dumps(connection_event(company_id=company_id)), NOW.isoformat())
        for company_id in company_ids
    ]
    handle_webhooks(engine, None, requests)


def test_an_import_reads_the_clients_settings_once_and_each_companys_before_folding_it(
    engine: Engine, fake: FakeCodatServer
) -> None:
    companies = seed(fake, 3)
    fake.control.sync_settings({"*": 168})
    fake.control.sync_settings({"banking-transactions": 12}, company_id=companies[0])
    fake.control.clear_requests()
    settings = settings_for(fake)
    job = create_job(engine, None, 24)
    done = asyncio.run(Importer(settings, engine, None, concurrency=2).run(job.id))
    assert done.status == "completed"
    assert sorted(settings_reads(fake)) == sorted(["/profile/syncSettings", *map(company_path, companies)])
    client, own = stored(engine, companies[0])
    assert (client["banking-transactions"], own["banking-transactions"]) == (168, 12)
    assert stored(engine, companies[1])[1]["banking-transactions"] == 168  # Codat repeats the client's value


def test_reconciliation_reads_the_clients_settings_once_per_run_and_each_companys(
    engine: Engine, fake: FakeCodatServer
) -> None:
    companies = seed(fake, 2)
    in_ledger(engine, *companies)
    fake.control.clear_requests()
    asyncio.run(reconcile(settings_for(fake), engine, None))
    assert sorted(settings_reads(fake)) == sorted(["/profile/syncSettings", *map(company_path, companies)])
    assert stored(engine, companies[1])[0]["invoices"] == 24


def test_a_failed_read_of_settings_leaves_those_read_before_and_reconciliation_goes_on(
    engine: Engine, fake: FakeCodatServer
) -> None:
    [company] = seed(fake, 1)
    in_ledger(engine, company)
    fake.control.sync_settings({"invoices": 168}, company_id=company)
    asyncio.run(reconcile(settings_for(fake), engine, None))
    fake.control.fault("/syncSettings$", status=500, times=20)
    [report] = asyncio.run(reconcile(settings_for(fake, codat_max_retries=1), engine, None))
    assert report.error is None
    assert stored(engine, company)[1]["invoices"] == 168


def test_the_daily_job_reads_what_was_not_read_for_a_day_one_call_each(engine: Engine, fake: FakeCodatServer) -> None:
    companies = seed(fake, 3)
    in_ledger(engine, *companies)
    settings = settings_for(fake)
    fake.control.clear_requests()
    assert asyncio.run(refresh_due(settings, engine, None)) == "read=4 changed=4 failed=0 due=4"
    assert sorted(settings_reads(fake)) == sorted(["/profile/syncSettings", *map(company_path, companies)])

    fake.control.clear_requests()
    assert asyncio.run(refresh_due(settings, engine, None)) == "read=0 changed=0 failed=0 due=0"
    assert asyncio.run(refresh_due(settings, engine, None, now=NOW + timedelta(hours=23))).endswith("due=0")
    assert settings_reads(fake) == []

    later = asyncio.run(refresh_due(settings, engine, None, now=NOW + timedelta(hours=25)))
    assert later == "read=4 changed=0 failed=0 due=4"
    assert len(settings_reads(fake)) == 4


def test_the_daily_job_stops_at_the_first_answer_saying_every_call_would_fail(
    engine: Engine, fake: FakeCodatServer
) -> None:
    in_ledger(engine, *seed(fake, 3))
    fake.control.configure(api_key="rotated")
    fake.control.clear_requests()
    assert asyncio.run(refresh_due(settings_for(fake), engine, None)) == "read=0 changed=0 failed=1 due=4"
    assert len(settings_reads(fake)) == 1


def test_a_company_created_is_handed_on_after_its_fold_to_queue_a_read(engine: Engine) -> None:
    told: list[list[str]] = []
    created = company_event(company_id="co-new")
    requests = [
        FoldRequest("msg_created", json.dumps(created), NOW.isoformat()),
        FoldRequest("msg_connection", json.dumps(connection_event(company_id="co-old")), NOW.isoformat()),
    ]
    handle_webhooks(engine, None, requests, companies_created=told.append)
    handle_webhooks(engine, None, requests[:1], companies_created=told.append)  # a redelivery: already folded
    assert told == [["co-new"]]


def test_without_an_api_key_nothing_is_read_and_the_daily_job_is_off(engine: Engine, fake: FakeCodatServer) -> None:
    in_ledger(engine, *seed(fake, 1))
    keyless = Settings(codat_base_url=fake.url, _env_file=None)
    fake.control.clear_requests()
    assert asyncio.run(refresh_due(keyless, engine, None)) == "skipped=no_api_key"

    async def read() -> bool:
        async with CodatClient.from_settings(keyless) as codat:
            return await refresh_settings(codat, engine, None, FreshnessPolicy.from_settings(keyless), quiet=True)

    assert asyncio.run(read()) is False
    assert fake.control.requests() == []

    class Runtime:
        settings = keyless

    assert SETTINGS_JOB in periodic_jobs()
    assert SETTINGS_JOB.interval(Runtime()) == 0  # type: ignore[arg-type]
    Runtime.settings = settings_for(fake)
    assert SETTINGS_JOB.interval(Runtime()) == 86_400  # type: ignore[arg-type]


def test_a_new_company_codat_does_not_know_is_asked_about_once_not_again_and_again(
    engine: Engine, fake: FakeCodatServer
) -> None:
    broker = StubBroker()
    broker.emit_after("process_boot")
    queue = declare_sync_settings(broker, WorkerRuntime(settings_for(fake), engine, None))
    [known] = seed(fake, 1)
    fake.control.clear_requests()
    queue([known, "not-in-codat"])
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        broker.join(OPS_QUEUE, fail_fast=True)
    finally:
        worker.stop()
    assert sorted(settings_reads(fake)) == sorted(
        ["/profile/syncSettings", company_path(known), company_path("not-in-codat")]
    )
    assert stored(engine, known)[1]["invoices"] == 24
