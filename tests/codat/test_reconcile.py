"""Reconciliation repairs a ledger whose webhooks were lost, through the same fold, and a second run
changes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.codat.conftest import KEY
from tests.support.builders import connection_event
from tests.support.services import run_cli, wait_for
from workers.codat.reconcile import RECONCILE_JOB, reconcile, run_periodic
from workers.ingest.handle import handle_webhook
from workers.ledger.context import WorkerRuntime
from workers.ledger.tables import DataTypeState
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade


def reconcile_cli(env: dict[str, str], cwd: Path, *companies: str) -> str:
    args = [arg for company in companies for arg in ("--company", company)]
    done = run_cli(["reconcile", *args], env, cwd, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ledger_snapshot(api: httpx.Client, company_id: str) -> dict[str, Any]:
    connections = api.get(f"/v1/companies/{company_id}/connections").json()["items"]
    return {
        c["id"]: {
            "connection": c,
            "detail": api.get(f"/v1/connections/{c['id']}").json(),
            "syncs": api.get(f"/v1/connections/{c['id']}/syncs", params={"limit": 500}).json()["items"],
        }
        for c in connections
    }


@pytest.mark.e2e
@pytest.mark.redis
def test_reconcile_repairs_a_ledger_whose_webhooks_were_dropped_and_a_second_run_changes_nothing(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = dev_and_fake
    company = fake.control.seed(companies=[{"platforms": ["xero", "hsbc", "shopify"]}])[0]
    xero, hsbc, shopify = (c["id"] for c in company["connections"])
    wait_for(
        lambda: all(api.get(f"/v1/connections/{c}").json().get("last_sync_at") for c in (xero, hsbc, shopify)),
        message="initial reads folded",
    )
    history_before = {c: len(api.get(f"/v1/connections/{c}/syncs").json()["items"]) for c in (xero, hsbc)}

    fake.control.webhooks(mode="drop")
    codat = httpx.Client(base_url=f"{fake.url}/companies/{company['id']}", headers={"Authorization": f"Basic {KEY}"})
    refreshed = codat.post("/data/queue/invoices", params={"connectionId": xero}).json()
    wait_for(lambda: codat.get(f"/data/history/{refreshed['id']}").json()["status"] == "Complete")
    fake.control.configure(sync_seconds=60)
    running = codat.post("/data/queue/bills", params={"connectionId": xero}).json()
    fake.control.set_status(hsbc, "Unlinked")
    fake.control.delete_connection(shopify)
    assert {m["status"] for m in fake.control.messages()[-3:]} == {"dropped"}

    first = reconcile_cli(env, tmp_path, company["id"])
    assert "result=ok" in first and "changes=0" not in first

    syncs = {s["id"]: s for s in api.get(f"/v1/connections/{xero}/syncs").json()["items"]}
    assert (syncs[refreshed["id"]]["phase"], syncs[refreshed["id"]]["source"]) == ("succeeded", "reconcile")
    active = api.get("/v1/syncs/active", params={"connection_id": xero}).json()["items"]
    assert [(s["id"], s["source"]) for s in active] == [(running["id"], "reconcile")]
    assert len(syncs) == history_before[xero] + 2  # the webhook-delivered initial read is not doubled
    assert api.get(f"/v1/connections/{hsbc}").json()["status"] == "Unlinked"
    assert len(api.get(f"/v1/connections/{hsbc}/syncs").json()["items"]) == history_before[hsbc]
    gone = api.get(f"/v1/connections/{shopify}").json()
    assert gone["deleted_at"] is not None and api.get(f"/v1/connections/{shopify}/syncs").json()["items"] == []

    before_second = ledger_snapshot(api, company["id"])
    second = reconcile_cli(env, tmp_path, company["id"])
    assert "folded=0 changes=0" in second
    assert ledger_snapshot(api, company["id"]) == before_second


def test_reconcile_pages_through_history_and_waits_out_a_rate_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("workers.codat.reconcile.PAGE_SIZE", 5)
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with FakeCodatServer(config=Config(sync_seconds=0.2, api_key=KEY)) as fake:
        company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False)[0]
        history = f"{fake.url}/companies/{company['id']}/data/history"
        headers = {"Authorization": f"Basic {KEY}"}
        wait_for(lambda: all(o["status"] == "Complete" for o in httpx.get(history, headers=headers).json()["results"]))
        fake.control.clear_requests()
        fake.control.fault("/dataStatus$", status=429, retry_after=1, times=1)
        settings = Settings(codat_base_url=fake.url, codat_api_key=KEY, _env_file=None)
        [report] = asyncio.run(reconcile(settings, engine, None, [company["id"]]))
        log = fake.control.requests()
    assert report.error is None and (report.operations, report.folded) == (12, 13)  # 12 syncs + the connection
    pages = [r for r in log if r["path"].endswith("/data/history")]
    assert len(pages) == 3
    assert [r["status"] for r in log if r["path"].endswith("/dataStatus")] == [429, 200]
    engine.dispose()


def test_the_periodic_job_is_registered_and_off_unless_reconcile_every_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RECONCILE_JOB in periodic_jobs()

    class Runtime:
        settings = Settings(_env_file=None)

    assert RECONCILE_JOB.interval(Runtime()) == 0  # type: ignore[arg-type]
    monkeypatch.setenv("SYNCTRACK_RECONCILE_EVERY", "5m")
    Runtime.settings = Settings(_env_file=None)
    assert RECONCILE_JOB.interval(Runtime()) == 300  # type: ignore[arg-type]


def test_the_periodic_run_covers_every_company_the_ledger_knows(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with FakeCodatServer(config=Config(sync_seconds=0.2, api_key=KEY)) as fake:
        company = fake.control.seed(companies=[{"platforms": ["hsbc"]}], announce=False)[0]
        conn = company["connections"][0]["id"]
        body = connection_event(connection_id=conn, company_id=company["id"], platform="HSBC")
        handle_webhook(engine, None, "msg_connected", json.dumps(body), datetime.now(UTC).isoformat())
        history = f"{fake.url}/companies/{company['id']}/data/history"
        headers = {"Authorization": f"Basic {KEY}"}
        wait_for(lambda: all(o["status"] == "Complete" for o in httpx.get(history, headers=headers).json()["results"]))
        settings = Settings(codat_base_url=fake.url, codat_api_key=KEY, _env_file=None)
        runtime = WorkerRuntime(settings, engine, None)
        first, second = run_periodic(runtime), run_periodic(runtime)
    assert first.startswith("companies=1 failed=0") and not first.endswith("changes=0")
    assert second == "companies=1 failed=0 changes=0"
    with Session(engine) as session:
        types = session.exec(select(DataTypeState.data_type).where(DataTypeState.connection_id == conn)).all()
    assert sorted(types) == ["banking-accountBalances", "banking-accounts", "banking-transactions"]
    engine.dispose()
