"""Keep-alive: a Linked connection that has not synced for `SYNCTRACK_KEEPALIVE_AFTER` gets one refresh of
`SYNCTRACK_KEEPALIVE_DATA_TYPE` at the fake Codat, audited as `system:keepalive` — in a real `synctrack dev`, whose
periodic job sends it, and through the job's own function for what is and is not due."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import BASE_TIME, SECRET, connection_event, read_completed
from tests.support.ledger_fill import deliver
from tests.support.services import ServiceProcess, free_port, wait_for, wait_until_healthy
from workers.codat.system_refresh import KEEPALIVE_ACTOR, KEEPALIVE_JOB, keep_alive, keepalive_interval
from workers.ledger.tables import AuditRecord, Sync
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade

KEY = "keepalive-key"
DAY = 24 * 60


def minutes_ago(minutes: float) -> float:
    """The builders' `minutes` of a moment `minutes` before now."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60 - minutes


def queued(fake: FakeCodatServer) -> list[str]:
    return [r["path"] for r in fake.control.requests() if r["method"] == "POST"]


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY)) as server:
        yield server


@pytest.fixture
def runtime(database_url: str, fake: FakeCodatServer) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        codat_base_url=fake.url,
        codat_api_key=KEY,
        codat_max_retries=0,
        _env_file=None,
    )
    engine = make_engine(database_url)
    yield WorkerRuntime(settings, engine, None)
    engine.dispose()


def test_only_connections_quiet_for_the_whole_period_get_one_refresh_each(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    company = fake.control.seed(
        companies=[{"platforms": ["xero", "hsbc", "sage"]}], announce=False, initial_read=False
    )[0]
    ids = {c["platformName"]: c["id"] for c in company["connections"]}
    quiet, busy, young = ids["Xero"], ids["HSBC"], ids["Sage Business Cloud Accounting"]
    on = {"company_id": company["id"]}
    deliver(
        runtime.settings,
        connection_event(connection_id=quiet, minutes=minutes_ago(40 * DAY), **on),
        read_completed([("invoices", "FetchError")], connection_id=quiet, minutes=minutes_ago(35 * DAY), **on),
        connection_event(connection_id=busy, minutes=minutes_ago(40 * DAY), **on),
        read_completed([("invoices", "Complete")], connection_id=busy, minutes=minutes_ago(DAY), **on),
        connection_event(connection_id=young, minutes=minutes_ago(2 * DAY), **on),  # linked two days ago
    )
    fake.control.clear_requests()

    assert asyncio.run(keep_alive(runtime)) == 1
    assert queued(fake) == [f"/companies/{company['id']}/data/queue/company"]
    with Session(runtime.engine) as session:
        (record,) = session.exec(select(AuditRecord)).all()
        (sync,) = session.exec(select(Sync).where(Sync.phase == "active", Sync.data_type == "company")).all()
    assert (record.action, record.actor, record.result, record.connection_id, record.data_type) == (
        "refresh",
        KEEPALIVE_ACTOR,
        "accepted",
        quiet,
        "company",
    )
    assert (sync.connection_id, sync.source, sync.event_id) == (quiet, "action", f"audit:{record.id}")

    # Requested once: the next checks leave it alone for the rest of the period.
    assert asyncio.run(keep_alive(runtime)) == 0
    assert len(queued(fake)) == 1


def test_a_refused_keep_alive_is_audited_and_tried_again_at_the_next_check(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    quiet = company["connections"][0]["id"]
    deliver(
        runtime.settings, connection_event(connection_id=quiet, company_id=company["id"], minutes=minutes_ago(40 * DAY))
    )
    fake.control.fault(f"/companies/{company['id']}/data/queue/company", status=500, times=1)
    assert asyncio.run(keep_alive(runtime)) == 0
    assert asyncio.run(keep_alive(runtime)) == 1
    with Session(runtime.engine) as session:
        results = [(r.actor, r.result) for r in session.exec(select(AuditRecord).order_by(AuditRecord.id)).all()]  # type: ignore[arg-type]
    assert results == [(KEEPALIVE_ACTOR, "failed"), (KEEPALIVE_ACTOR, "accepted")]


def test_the_job_runs_hourly_by_default_and_is_off_without_an_api_key_or_a_period(
    monkeypatch: pytest.MonkeyPatch, runtime: WorkerRuntime
) -> None:
    defaults = Settings(_env_file=None)
    assert (defaults.keepalive_after_seconds, defaults.keepalive_data_type, defaults.keepalive_check_seconds) == (
        30 * 86400,
        "company",
        3600,
    )
    assert defaults.deauthorize_after_seconds == 90 * 86400
    assert KEEPALIVE_JOB in periodic_jobs()
    assert keepalive_interval(runtime) == 3600
    assert keepalive_interval(WorkerRuntime(defaults, runtime.engine, None)) == 0  # no API key
    monkeypatch.setenv("SYNCTRACK_KEEPALIVE_AFTER", "0")
    monkeypatch.setenv("SYNCTRACK_CODAT_API_KEY", KEY)
    off = Settings(_env_file=None)
    assert keepalive_interval(WorkerRuntime(off, runtime.engine, None)) == 0
    monkeypatch.setenv("SYNCTRACK_KEEPALIVE_AFTER", "7d")
    monkeypatch.setenv("SYNCTRACK_DEAUTHORIZE_AFTER", "60d")
    monkeypatch.setenv("SYNCTRACK_KEEPALIVE_DATA_TYPE", "bankAccounts")
    weekly = Settings(_env_file=None)
    assert (weekly.keepalive_after_seconds, weekly.deauthorize_after_seconds, weekly.keepalive_data_type) == (
        7 * 86400,
        60 * 86400,
        "bankAccounts",
    )


@pytest.fixture
def dev_keeping_alive(tmp_path: Path) -> Iterator[tuple[httpx.Client, FakeCodatServer]]:
    port = free_port()
    config = Config(sync_seconds=0.4, api_key=KEY)
    with FakeCodatServer(receiver_url=f"http://127.0.0.1:{port}/webhooks/codat", secret=SECRET, config=config) as fake:
        env = {
            "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
            "SYNCTRACK_KEEPALIVE_CHECK_SECONDS": "1",
            **AUTH_ENV,
        }
        dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", dev)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=ADMIN_HEADERS) as api:
                yield api, fake
        finally:
            dev.stop()


def test_a_running_synctrack_keeps_a_quiet_connection_alive_through_codat(
    dev_keeping_alive: tuple[httpx.Client, FakeCodatServer],
) -> None:
    from tests.support.builders import signed_request

    api, fake = dev_keeping_alive
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    xero = company["connections"][0]["id"]
    old = connection_event(connection_id=xero, company_id=company["id"], platform="Xero", minutes=minutes_ago(80 * DAY))
    raw, headers = signed_request(old)
    assert api.post("/webhooks/codat", content=raw, headers=headers).status_code == 202

    def refreshed() -> Any:
        audit = api.get("/v1/audit", params={"connection_id": xero}).json()["items"]
        return audit if any(a["actor"] == KEEPALIVE_ACTOR for a in audit) else None

    (record,) = wait_for(refreshed, timeout=30, message="a keep-alive refresh")
    assert (record["action"], record["data_type"], record["result"]) == ("refresh", "company", "accepted")
    assert queued(fake) == [f"/companies/{company['id']}/data/queue/company"]

    # Codat reads the data type and says so: the connection is no longer at risk of deauthorization.
    def synced() -> Any:
        conn = api.get(f"/v1/connections/{xero}").json()
        return conn if conn["last_sync_at"] else None

    conn = wait_for(synced, timeout=30, message="the keep-alive read folded")
    risk = datetime.fromisoformat(conn["deauthorization_risk_at"].replace("Z", "+00:00"))
    assert abs(risk - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    time.sleep(2.5)  # two more checks: nothing more is due
    assert len(queued(fake)) == 1
