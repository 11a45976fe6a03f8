"""Importing an existing Codat account: `synctrack import`, the importer it runs, and discovery by periodic
reconciliation — against the fake Codat, whose companies here exist only in Codat (no webhook was sent)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.codat.conftest import KEY
from tests.support.services import run_cli
from workers.codat.client import CodatClient
from workers.codat.import_jobs import create_job, job_out
from workers.codat.importer import Importer
from workers.codat.reconcile import reconcile
from workers.runtime.db import make_engine, upgrade

PLATFORMS = ["xero", "hsbc"]


def only_in_codat(fake: FakeCodatServer, count: int, history: int = 5) -> list[dict[str, Any]]:
    specs = [
        {"platforms": PLATFORMS, "name": f"Onboarding {i}", "description": f"Lead {i}", "tags": {"region": "uk"}}
        for i in range(count)
    ]
    return fake.control.seed(companies=specs, announce=False, initial_read=False, history=history)


def import_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["import", *args], env, cwd)


def settings_for(fake: FakeCodatServer, **extra: Any) -> Settings:
    return Settings(codat_base_url=fake.url, codat_api_key=KEY, _env_file=None, **extra)


@pytest.mark.e2e
@pytest.mark.redis
def test_synctrack_import_brings_in_companies_only_codat_knows_and_a_second_run_folds_nothing(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = dev_and_fake
    companies = only_in_codat(fake, 3)
    assert api.get("/v1/companies").json()["items"] == []

    first = import_cli(env, tmp_path, "--concurrency", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "completed: companies=3 imported=3 failed=0 connections=6 syncs=30" in first.stdout
    assert "companies/s" in first.stderr  # the progress bar

    listed = {c["id"]: c for c in api.get("/v1/companies").json()["items"]}
    assert set(listed) == {c["id"] for c in companies}
    one = companies[0]
    assert (listed[one["id"]]["name"], listed[one["id"]]["description"], listed[one["id"]]["tags"]) == (
        "Onboarding 0",
        "Lead 0",
        {"region": "uk"},
    )
    for conn in one["connections"]:
        got = api.get(f"/v1/connections/{conn['id']}").json()
        assert (got["status"], got["platform_name"]) == ("Linked", conn["platformName"])
        assert got["last_successful_sync_at"] is not None
        syncs = api.get(f"/v1/connections/{conn['id']}/syncs").json()["items"]
        assert len(syncs) == 5 and {s["source"] for s in syncs} == {"reconcile"}

    second = import_cli(env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "imported=3 failed=0" in second.stdout and "syncs=0 folded=0" in second.stdout


@pytest.mark.e2e
@pytest.mark.redis
def test_a_company_that_fails_is_reported_with_its_reason_and_retried_on_resume(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = dev_and_fake
    broken, healthy = only_in_codat(fake, 2, history=2)
    fake.control.fault(f"/companies/{broken['id']}/data/history$", status=404, message="History is unavailable")

    first = import_cli(env, tmp_path, "--company", broken["id"], "--company", healthy["id"])
    assert first.returncode == 1
    assert "imported=1 failed=1" in first.stdout
    failure = next(line for line in first.stdout.splitlines() if f"company={broken['id']} error=" in line)
    assert "not_found: " in failure and "History is unavailable" in failure
    job_id = first.stdout.split()[1]
    assert job_id.startswith("imp_") and f"synctrack import --resume {job_id}" in first.stdout

    fake.control.clear_faults()
    resumed = import_cli(env, tmp_path, "--resume", job_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"import {job_id} completed: companies=2 imported=2 failed=0" in resumed.stdout
    assert len(api.get(f"/v1/connections/{broken['connections'][0]['id']}/syncs").json()["items"]) == 2


def test_the_importer_pages_codats_company_list_and_keeps_to_its_rate_limit(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    config = Config(api_key=KEY, quota=6, quota_window_seconds=1.0)
    with FakeCodatServer(config=config) as fake:
        seeded = only_in_codat(fake, 5, history=1)
        fake.control.clear_requests()
        settings = settings_for(fake, codat_max_retry_after_seconds=5)
        job = create_job(engine, None, 24)

        async def run() -> tuple[Any, int]:
            async with CodatClient.from_settings(settings) as client:
                done = await Importer(settings, engine, None, client=client, concurrency=3, page_size=2).run(job.id)
                return done, client.calls

        finished, calls = asyncio.run(run())
        log = fake.control.requests()
    out = job_out(engine, finished)
    assert (out.status, out.total, out.done, out.failed, out.connections, out.syncs) == ("completed", 5, 5, 0, 10, 10)
    pages = [r for r in log if r["path"] == "/companies"]
    assert len(pages) == 3  # 2 + 2 + 1, following _links.next
    assert [r["status"] for r in log if r["status"] != 200] == []  # the quota was waited out, never overrun
    # a page each 2 companies, the client's sync settings, and each company's history, dataStatus, sync settings
    assert calls == len(log) and calls <= 3 + 1 + 3 * len(seeded)
    engine.dispose()


def test_reconcile_discover_also_visits_companies_the_ledger_lacks(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with FakeCodatServer(config=Config(api_key=KEY)) as fake:
        [company] = only_in_codat(fake, 1, history=2)
        quiet = asyncio.run(reconcile(settings_for(fake), engine, None))
        found = asyncio.run(reconcile(settings_for(fake, reconcile_discover=True), engine, None))
        again = asyncio.run(reconcile(settings_for(fake, reconcile_discover=True), engine, None))
    assert quiet == []
    assert [(r.company_id, r.error, r.connections, r.operations) for r in found] == [(company["id"], None, 2, 4)]
    assert [(r.company_id, r.folded) for r in again] == [(company["id"], 0)]  # known now, nothing new
    engine.dispose()


def wait_for_job(api: httpx.Client, job_id: str, status: str = "completed") -> dict[str, Any]:
    from tests.support.services import wait_for

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/v1/admin/imports/{job_id}").json()
        return job if job["status"] == status else None

    found: dict[str, Any] = wait_for(finished, timeout=60, message=f"import {job_id} {status}")
    return found


@pytest.mark.e2e
@pytest.mark.redis
def test_the_admin_api_runs_an_import_on_the_embedded_worker_and_shows_its_progress(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]],
) -> None:
    api, fake, _ = dev_and_fake
    companies = only_in_codat(fake, 4, history=3)
    started = api.post("/v1/admin/imports", json={"lookback_hours": 12})
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/v1/admin/imports/{job['id']}"
    assert set(job) >= {"id", "status", "total", "done", "failed", "folded", "started_at", "finished_at", "errors"}
    assert job["status"] == "pending" and job["lookback_hours"] == 12

    done = wait_for_job(api, job["id"])
    assert (done["total"], done["done"], done["failed"], done["connections"], done["syncs"]) == (4, 4, 0, 8, 24)
    assert done["folded"] > 24 and done["finished_at"] is not None and done["errors"] == []
    assert {c["id"] for c in api.get("/v1/companies").json()["items"]} == {c["id"] for c in companies}
    listed = api.get("/v1/admin/imports").json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]

    again = api.post("/v1/admin/imports", json={"company_id": [companies[0]["id"]]}).json()
    repeat = wait_for_job(api, again["id"])
    assert (repeat["total"], repeat["done"], repeat["folded"], repeat["company_ids"]) == (1, 1, 0, [companies[0]["id"]])
    assert api.post(f"/v1/admin/imports/{again['id']}/resume").status_code == 409  # nothing left to retry
    assert api.get("/v1/admin/imports/imp_nope").status_code == 404
    refused = api.post("/v1/admin/imports", json={"lookback_hours": -1})
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_parameter")
