"""Missed webhooks are recorded where reconciliation folds results no webhook reported, once each, on SQLite and
PostgreSQL; a result a webhook reported is never one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.codat.conftest import KEY
from tests.support.builders import connection_event
from tests.support.services import wait_for
from workers.codat.reconcile import run_periodic
from workers.ingest.handle import handle_webhook
from workers.ledger.missed import count_missed, missed_page
from workers.ledger.worker_runtime import WorkerRuntime
from workers.runtime.db import make_engine, upgrade


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_periodic_run_records_each_result_codat_ran_without_a_webhook_once(engine: Engine) -> None:
    with FakeCodatServer(config=Config(sync_seconds=0.2, api_key=KEY)) as fake:
        # Codat ran the first read of both connections; only the Xero one's webhook arrived.
        company = fake.control.seed(companies=[{"platforms": ["hsbc", "xero"]}], announce=False)[0]
        hsbc, xero = (c["id"] for c in company["connections"])
        history = f"{fake.url}/companies/{company['id']}/data/history"
        headers = {"Authorization": f"Basic {KEY}"}
        wait_for(lambda: all(o["status"] == "Complete" for o in httpx.get(history, headers=headers).json()["results"]))
        operations = httpx.get(history, headers=headers, params={"pageSize": 500}).json()["results"]
        for conn, platform in ((hsbc, "HSBC"), (xero, "Xero")):
            body = connection_event(connection_id=conn, company_id=company["id"], platform=platform)
            handle_webhook(engine, None, f"msg_{conn}", json.dumps(body), datetime.now(UTC).isoformat())
        for message in fake.control.messages():
            if message["event_type"].startswith("read.completed") and xero in json.dumps(message["body"]):
                handle_webhook(engine, None, message["id"], json.dumps(message["body"]), datetime.now(UTC).isoformat())
        settings = Settings(codat_base_url=fake.url, codat_api_key=KEY, _env_file=None)
        runtime = WorkerRuntime(settings, engine, None)
        run_periodic(runtime)
        run_periodic(runtime)
    banking = {o["id"] for o in operations if o["connectionId"] == hsbc}
    assert count_missed(engine) == {"Banking": len(banking)}
    with Session(engine) as session:
        rows = missed_page(session, None, 100)
    assert {r.dataset_id for r in rows} == banking
    assert {(r.connection_id, r.status) for r in rows} == {(hsbc, "Complete")}
    assert [r.found_at for r in rows] == sorted((r.found_at for r in rows), reverse=True)
