"""Missed webhooks are recorded where reconciliation folds results no webhook reported, once each, on SQLite and
PostgreSQL; a result a webhook reported is never one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.app import create_app
from tests.codat.conftest import KEY
from tests.support.auth import ADMIN_HEADERS
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


def reconcile_a_company_whose_banking_webhooks_were_lost(engine: Engine) -> tuple[str, set[str]]:
    """Codat ran the first read of an HSBC and a Xero connection; only the Xero one's webhook arrived. Two periodic
    runs later: the HSBC connection's id and its results (dataset ids)."""
    with FakeCodatServer(config=Config(sync_seconds=0.2, api_key=KEY)) as fake:
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
    return hsbc, {o["id"] for o in operations if o["connectionId"] == hsbc}


def test_the_periodic_run_records_each_result_codat_ran_without_a_webhook_once(engine: Engine) -> None:
    hsbc, banking = reconcile_a_company_whose_banking_webhooks_were_lost(engine)
    assert count_missed(engine) == {"Banking": len(banking)}
    with Session(engine) as session:
        rows = missed_page(session, None, 100)
    assert {r.dataset_id for r in rows} == banking
    assert {(r.connection_id, r.status) for r in rows} == {(hsbc, "Complete")}
    assert [r.found_at for r in rows] == sorted((r.found_at for r in rows), reverse=True)


def test_the_admin_list_pages_through_every_missed_webhook_newest_first(embedded_settings: Settings) -> None:
    engine = make_engine(embedded_settings.database_url)
    upgrade(embedded_settings.database_url)
    _, banking = reconcile_a_company_whose_banking_webhooks_were_lost(engine)
    engine.dispose()
    with TestClient(create_app(embedded_settings), headers=ADMIN_HEADERS) as client:
        whole = client.get("/v1/admin/missed").json()
        assert whole["next_cursor"] is None and len(whole["items"]) == len(banking) > 1
        paged: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = client.get("/v1/admin/missed", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            paged += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert paged == whole["items"]
        assert {item["dataset_id"] for item in paged} == banking
        bad = client.get("/v1/admin/missed", params={"cursor": "not-a-cursor"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_parameter")
