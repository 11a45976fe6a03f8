"""Missed webhooks end to end: a real `synctrack dev` (with `SYNCTRACK_RECONCILE_EVERY=0`) and the fake Codat holding
results no webhook reported. A data type turning overdue reconciles its company at once, at most once an hour; each
result found is listed, counted and on the connection's timeline, and stays so after a late webhook and a rebuild."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakecodat.server import FakeCodatServer
from tests.codat.conftest import KEY, DevAndFake, dev_beside_fake
from tests.support.auth import bearer, company_token
from tests.support.services import run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

THRESHOLD_SECONDS = 12
"""`invoices` turns overdue this long after its last successful sync (`SYNCTRACK_FRESHNESS_OVERRIDES`)."""


@pytest.fixture
def dev(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[DevAndFake]:
    """The periodic sweep is off (`SYNCTRACK_RECONCILE_EVERY=0`); the targeted reconcile is not."""
    with dev_beside_fake(
        tmp_path,
        redis_url,
        namespace,
        SYNCTRACK_FRESHNESS_OVERRIDES=f"invoices={THRESHOLD_SECONDS}s",
        SYNCTRACK_FRESHNESS_CHECK_SECONDS="1",
        SYNCTRACK_RECONCILE_OVERDUE_CHECK_SECONDS="1",
    ) as running:
        yield running


def missed(api: httpx.Client, **params: str) -> list[dict[str, Any]]:
    answer = api.get("/v1/admin/missed", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def missed_total(api: httpx.Client) -> dict[str, float]:
    return {
        s.labels["source_type"]: s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
        if s.name == "synctrack_webhooks_missed_total"
    }


def invoices(api: httpx.Client, connection_id: str) -> dict[str, Any]:
    """The connection's invoices (empty until the connection and its invoices are known)."""
    detail = api.get(f"/v1/connections/{connection_id}").json()
    found: dict[str, Any] = next((d for d in detail.get("data_types", []) if d["data_type"] == "invoices"), {})
    return found


def history_reads(fake: FakeCodatServer, company_id: str) -> int:
    """Reconciliation's reads of the company's pull-operation history (the list, not one operation)."""
    return sum(1 for r in fake.control.requests() if r["path"] == f"/companies/{company_id}/data/history")


def queue_invoices(fake: FakeCodatServer, company_id: str, connection_id: str) -> str:
    """A refresh of invoices asked of Codat directly: its result reaches Synctrack only if a webhook does."""
    codat = httpx.Client(base_url=f"{fake.url}/companies/{company_id}", headers={"Authorization": f"Basic {KEY}"})
    with codat:
        dataset: str = codat.post("/data/queue/invoices", params={"connectionId": connection_id}).json()["id"]
        wait_for(lambda: codat.get(f"/data/history/{dataset}").json()["status"] == "Complete", message="Complete")
    return dataset


def seed_linked(api: httpx.Client, fake: FakeCodatServer) -> tuple[str, str, datetime]:
    """A company with one Xero connection whose first read was reported; its invoices' last success."""
    company = fake.control.seed(companies=[{"platforms": ["xero"]}])[0]
    connection_id = company["connections"][0]["id"]
    wait_for(lambda: invoices(api, connection_id).get("last_successful_sync_at"), message="first read folded")
    wait_for(lambda: api.get(f"/v1/connections/{connection_id}").json()["freshness"] == "fresh", message="fresh")
    last = datetime.fromisoformat(invoices(api, connection_id)["last_successful_sync_at"])
    return company["id"], connection_id, last


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def test_a_data_type_turning_overdue_finds_the_result_whose_webhook_was_lost_once_an_hour(
    dev: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = dev
    started = datetime.now(UTC)
    company_id, connection_id, first_read = seed_linked(api, fake)
    reported = {
        s["id"] for s in api.get(f"/v1/connections/{connection_id}/syncs", params={"limit": 500}).json()["items"]
    }
    assert missed_total(api).get("Accounting") == 0

    # Halfway to the threshold Codat syncs invoices again; the webhook is held back.
    sleep_until(first_read + timedelta(seconds=THRESHOLD_SECONDS / 2))
    fake.control.webhooks(mode="hold")
    lost = queue_invoices(fake, company_id, connection_id)
    assert missed(api) == []

    # Invoices turn overdue by the first read: the company is reconciled and the lost result found.
    found = wait_for(lambda: missed(api), timeout=THRESHOLD_SECONDS + 20, message="missed webhook listed")
    assert [(m["dataset_id"], m["connection_id"], m["company_id"]) for m in found] == [
        (lost, connection_id, company_id)
    ]
    item = found[0]
    assert (item["data_type"], item["status"]) == ("invoices", "Complete")
    assert datetime.fromisoformat(item["found_at"]) >= datetime.fromisoformat(item["completed_at"])
    assert datetime.fromisoformat(item["found_at"]) >= first_read + timedelta(seconds=THRESHOLD_SECONDS)
    assert not reported & {m["dataset_id"] for m in found}  # what webhooks reported is not counted
    counted = missed_total(api)
    assert (counted["Accounting"], sum(counted.values())) == (1, 1)
    timeline = api.get(f"/v1/connections/{connection_id}/timeline", params={"limit": 500}).json()["items"]
    recovered = [t for t in timeline if t["kind"] == "recovered_by_reconcile"]
    assert [(t["data_type"], t["at"]) for t in recovered] == [("invoices", item["found_at"])]
    wait_for(lambda: invoices(api, connection_id)["freshness"] == "fresh", message="fresh by the result found")

    # `since` filters on found_at; a bad one is a 400 with a reason; company tokens may not list.
    assert missed(api, since=item["found_at"]) == found
    later = (datetime.fromisoformat(item["found_at"]) + timedelta(seconds=1)).isoformat()
    assert missed(api, since=later) == []
    assert missed(api, since=started.isoformat()) == found
    bad = api.get("/v1/admin/missed", params={"since": "yesterday"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_parameter")
    assert "since" in bad.json()["detail"]
    token = company_token(company_id)
    assert api.get("/v1/admin/missed", headers=bearer(token)).status_code == 403

    # The late webhook arrives: the result stays missed.
    fake.control.clear_requests()
    folded_before = len(api.get("/v1/events", params={"company_id": company_id, "limit": 500}).json()["items"])
    assert fake.control.release() >= 1
    wait_for(
        lambda: (
            len(api.get("/v1/events", params={"company_id": company_id, "limit": 500}).json()["items"]) > folded_before
        ),
        message="late webhook stored",
    )
    time.sleep(1)
    assert missed(api) == found
    assert missed_total(api).get("Accounting") == 1

    # Another result is lost, and invoices turn overdue again within the hour: no second reconcile.
    fake.control.webhooks(mode="drop")
    second = queue_invoices(fake, company_id, connection_id)
    last = datetime.fromisoformat(invoices(api, connection_id)["last_successful_sync_at"])
    sleep_until(last + timedelta(seconds=THRESHOLD_SECONDS))
    wait_for(lambda: invoices(api, connection_id)["freshness"] == "overdue", message="overdue again")
    time.sleep(4)  # four runs of the targeted job
    assert history_reads(fake, company_id) == 0
    assert [m["dataset_id"] for m in missed(api)] == [lost]
    assert second not in {m["dataset_id"] for m in missed(api)}

    # A rebuild of the ledger leaves the record alone.
    done = run_cli(["ledger", "rebuild", "--apply", "--yes"], env, tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert missed(api) == found
    timeline = api.get(f"/v1/connections/{connection_id}/timeline", params={"limit": 500}).json()["items"]
    assert [t["kind"] for t in timeline].count("recovered_by_reconcile") == 1


def test_the_periodic_sweep_counts_what_it_finds_and_does_not_hold_back_the_targeted_reconcile(
    dev: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = dev
    company_id, connection_id, first_read = seed_linked(api, fake)
    fake.control.webhooks(mode="drop")
    swept = queue_invoices(fake, company_id, connection_id)

    done = run_cli(["reconcile", "--company", company_id], env, tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missed=1" in done.stdout
    assert [m["dataset_id"] for m in missed(api)] == [swept]
    assert missed_total(api).get("Accounting") == 1

    # The sweep just ran; invoices still turn overdue later, and the targeted reconcile runs regardless.
    fake.control.clear_requests()
    targeted = queue_invoices(fake, company_id, connection_id)
    last = datetime.fromisoformat(invoices(api, connection_id)["last_successful_sync_at"])
    sleep_until(last + timedelta(seconds=THRESHOLD_SECONDS))
    found = wait_for(lambda: len(missed(api)) == 2 or None, timeout=20, message="targeted reconcile")
    assert found
    assert [m["dataset_id"] for m in missed(api)] == [targeted, swept]
    assert history_reads(fake, company_id) >= 1
    assert missed_total(api).get("Accounting") == 2
