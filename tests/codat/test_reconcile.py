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
from redis import Redis
from sqlmodel import Session, select

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.codat.conftest import KEY
from tests.support.builders import connection_event
from tests.support.services import ServiceProcess, run_cli, run_db_upgrade, wait_for
from workers.codat.reconcile import RECONCILE_JOB, reconcile, run_periodic
from workers.ingest.handle import handle_webhook
from workers.ledger.tables import DataTypeState
from workers.ledger.worker_runtime import WorkerRuntime
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


@pytest.fixture
def reconcile_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without the settings that decide periodic reconciliation."""
    for name in ("SYNCTRACK_CODAT_API_KEY", "SYNCTRACK_RECONCILE_EVERY", "SYNCTRACK_RECONCILE_EVERY_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def interval(settings: Settings) -> float:
    """Seconds between the workers' periodic reconciliations under `settings` (0 = off)."""
    engine = make_engine("sqlite://")
    try:
        return RECONCILE_JOB.interval(WorkerRuntime(settings, engine, None))
    finally:
        engine.dispose()


def test_the_workers_reconcile_at_start_and_then_periodically() -> None:
    assert RECONCILE_JOB in periodic_jobs() and RECONCILE_JOB.at_start


def test_with_an_api_key_the_workers_reconcile_every_six_hours_by_default(reconcile_env: pytest.MonkeyPatch) -> None:
    reconcile_env.setenv("SYNCTRACK_CODAT_API_KEY", KEY)
    assert interval(Settings(_env_file=None)) == 6 * 3600
    assert interval(Settings(codat_api_key=KEY, _env_file=None)) == 6 * 3600


def test_without_an_api_key_periodic_reconciliation_is_off(reconcile_env: pytest.MonkeyPatch) -> None:
    assert interval(Settings(_env_file=None)) == 0


def test_an_explicit_reconcile_every_wins_and_zero_turns_it_off_even_with_a_key(
    reconcile_env: pytest.MonkeyPatch,
) -> None:
    reconcile_env.setenv("SYNCTRACK_CODAT_API_KEY", KEY)
    reconcile_env.setenv("SYNCTRACK_RECONCILE_EVERY", "0")
    assert interval(Settings(_env_file=None)) == 0
    reconcile_env.setenv("SYNCTRACK_RECONCILE_EVERY", "5m")
    assert interval(Settings(_env_file=None)) == 300
    assert interval(Settings(codat_api_key=KEY, reconcile_every_seconds=0, _env_file=None)) == 0


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


@pytest.mark.e2e
@pytest.mark.redis
def test_a_worker_with_an_api_key_reconciles_shortly_after_it_starts_even_when_a_run_was_recent(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_CODAT_API_KEY": KEY,
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    engine = make_engine(env["SYNCTRACK_DATABASE_URL"])
    with FakeCodatServer(config=Config(sync_seconds=0.2, api_key=KEY)) as fake:
        # Codat ran the first read, but its webhooks never arrived: the ledger knows only the connection.
        company = fake.control.seed(companies=[{"platforms": ["hsbc"]}], announce=False)[0]
        conn = company["connections"][0]["id"]
        body = connection_event(connection_id=conn, company_id=company["id"], platform="HSBC")
        handle_webhook(engine, None, "msg_connected", json.dumps(body), datetime.now(UTC).isoformat())
        history = f"{fake.url}/companies/{company['id']}/data/history"
        headers = {"Authorization": f"Basic {KEY}"}
        wait_for(lambda: all(o["status"] == "Complete" for o in httpx.get(history, headers=headers).json()["results"]))
        # The deployment reconciled an hour ago (its next periodic run is five hours away), then restarts.
        redis = Redis.from_url(redis_url)
        redis.set(f"{namespace}:periodic:reconcile", "an hour ago", ex=5 * 3600)
        fake.control.clear_requests()
        env["SYNCTRACK_CODAT_BASE_URL"] = fake.url
        worker = ServiceProcess(["worker", "--processes", "1", "--threads", "1"], env, tmp_path, "worker")
        try:
            wait_for(
                lambda: any(r["path"].endswith(f"{company['id']}/dataStatus") for r in fake.control.requests()),
                timeout=30,
                message="the worker asking Codat for the company's data status",
            )

            def data_types() -> list[str] | None:
                with Session(engine) as session:
                    query = select(DataTypeState.data_type).where(DataTypeState.connection_id == conn)
                    found = sorted(session.exec(query).all())
                return found or None

            types = wait_for(data_types, timeout=30, message="the reconciled data types in the ledger")
        finally:
            worker.stop()
        assert types == ["banking-accountBalances", "banking-accounts", "banking-transactions"], worker.output()
        assert redis.ttl(f"{namespace}:periodic:reconcile") > 5 * 3600, "the next run is a full period away"
        redis.close()
    engine.dispose()
