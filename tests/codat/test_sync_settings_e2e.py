"""Freshness that follows Codat's schedule, end to end: the fake Codat with sync settings, signed webhooks into
real Synctrack processes, `GET /v1/connections/{id}`, the stream and `/metrics` out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.codat.conftest import KEY
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import (
    BASE_TIME,
    COMPANY,
    CONNECTION,
    SECRET,
    company_event,
    connection_event,
    read_completed,
)
from tests.support.services import (
    ServiceProcess,
    free_port,
    run_cli,
    start_web_and_worker,
    wait_for,
    wait_until_healthy,
)
from tests.support.sse_client import SseClient
from tests.support.subscription_support import post_webhook, service_env
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

HOUR = 3600
FACTOR = 1.5


def ago(hours: float) -> float:
    """The builders' `minutes` of a moment `hours` before now."""
    return (datetime.now(UTC) - timedelta(hours=hours) - BASE_TIME).total_seconds() / 60


def data_types(api: httpx.Client, connection_id: str) -> dict[str, dict[str, Any]]:
    return {d["data_type"]: d for d in api.get(f"/v1/connections/{connection_id}").json().get("data_types", [])}


def thresholds(api: httpx.Client, connection_id: str) -> dict[str, tuple[float, str]]:
    return {name: (d["threshold_seconds"], d["threshold_source"]) for name, d in data_types(api, connection_id).items()}


@pytest.fixture
def dev_with_schedules(
    tmp_path: Path, redis_url: str, namespace: str
) -> Iterator[tuple[httpx.Client, FakeCodatServer]]:
    """`synctrack dev` wired to the fake Codat, with `customers` overridden to 100 h."""
    port = free_port()
    with FakeCodatServer(config=Config(api_key=KEY)) as fake:
        env = {
            "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
            "SYNCTRACK_FRESHNESS_OVERRIDES": "customers=100h",
            "SYNCTRACK_REDIS_URL": redis_url,
            "SYNCTRACK_REDIS_NAMESPACE": namespace,
            **AUTH_ENV,
        }
        dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", dev)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=ADMIN_HEADERS) as api:
                yield api, fake
        finally:
            dev.stop()


def test_on_a_weekly_schedule_a_connection_synced_three_days_ago_is_fresh_and_says_why(
    dev_with_schedules: tuple[httpx.Client, FakeCodatServer],
) -> None:
    api, fake = dev_with_schedules
    fake.control.seed(companies=[{"id": COMPANY, "platforms": ["xero"]}], announce=False, initial_read=False)
    fake.control.sync_settings({"*": 168, "taxRates": 0})
    fake.control.sync_settings({"bills": 96, "payments": 168, "journalEntries": 0}, company_id=COMPANY)

    # The workers' daily read ran at start, when the ledger had no company: it read the client's alone.
    wait_for(lambda: "/profile/syncSettings" in [r["path"] for r in fake.control.requests()], message="daily read")
    post_webhook(api, company_event(company_id=COMPANY, minutes=ago(0)))  # a new company: its settings are read
    post_webhook(api, connection_event(minutes=ago(80)))
    three_days = [(t, "Complete") for t in ("invoices", "bills", "payments", "journalEntries", "customers")]
    post_webhook(api, read_completed(three_days, minutes=ago(72)))
    post_webhook(api, read_completed([("taxRates", "Complete")], minutes=ago(1)))

    weekly = 168 * FACTOR * HOUR
    expected = {
        "invoices": (weekly, "client_schedule"),
        "bills": (96 * FACTOR * HOUR, "company_schedule"),  # the company's own: it differs from the client's
        "payments": (weekly, "client_schedule"),  # the company's is the client's value
        "journalEntries": (weekly, "client_schedule"),  # the company's 0 is no schedule: the client's applies
        "customers": (100 * HOUR, "override"),  # SYNCTRACK_FRESHNESS_OVERRIDES wins
        "taxRates": (24 * HOUR, "default"),  # no schedule anywhere: SYNCTRACK_FRESHNESS_AFTER
    }
    wait_for(lambda: thresholds(api, CONNECTION) == expected, message="thresholds from Codat's schedules")
    assert [r["path"] for r in fake.control.requests()].count(f"/companies/{COMPANY}/syncSettings") == 1

    detail = api.get(f"/v1/connections/{CONNECTION}").json()
    assert (detail["freshness"], detail["overdue_data_types"]) == ("fresh", [])
    assert {d["data_type"]: d["freshness"] for d in detail["data_types"]} == dict.fromkeys(expected, "fresh")
    assert api.get("/v1/connections", params={"freshness": "overdue"}).json()["items"] == []


def freshness_gauge(api: httpx.Client) -> dict[str, float]:
    return {
        s.labels["freshness"]: s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
        if s.name == "synctrack_connections_by_freshness" and s.labels.get("source_type") == "Banking"
    }


@pytest.fixture
def web_and_worker(
    tmp_path: Path, redis_url: str, namespace: str
) -> Iterator[tuple[httpx.Client, FakeCodatServer, dict[str, str]]]:
    """`synctrack web` and `synctrack worker` on the real Redis, wired to the fake Codat; no periodic
    freshness check, so whatever is announced comes from what changed it."""
    with FakeCodatServer(config=Config(api_key=KEY)) as fake:
        env = service_env(
            tmp_path,
            SYNCTRACK_REDIS_URL=redis_url,
            SYNCTRACK_REDIS_NAMESPACE=namespace,
            SYNCTRACK_CODAT_BASE_URL=fake.url,
            SYNCTRACK_CODAT_API_KEY=KEY,
            SYNCTRACK_FRESHNESS_CHECK_SECONDS="0",
        )
        upgrade(env["SYNCTRACK_DATABASE_URL"])
        port = free_port()
        with ExitStack() as stack, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=4)
            api.headers.update(ADMIN_HEADERS)
            yield api, fake, env


def test_a_change_of_codats_schedule_announces_the_freshness_it_changes_and_the_metrics_follow(
    web_and_worker: tuple[httpx.Client, FakeCodatServer, dict[str, str]], tmp_path: Path
) -> None:
    api, fake, env = web_and_worker
    company = fake.control.seed(companies=[{"platforms": ["hsbc"]}], announce=False, initial_read=False)[0]
    cid, conn = company["id"], company["connections"][0]["id"]
    post_webhook(api, company_event(company_id=cid, minutes=ago(0)))
    post_webhook(api, connection_event(connection_id=conn, company_id=cid, platform="HSBC", minutes=ago(80)))
    post_webhook(
        api, read_completed([("banking-transactions", "Complete")], connection_id=conn, company_id=cid, minutes=ago(72))
    )
    daily = (24 * FACTOR * HOUR, "client_schedule")  # Codat's default: a daily sync
    wait_for(lambda: thresholds(api, conn).get("banking-transactions") == daily, message="the daily schedule read")
    assert api.get(f"/v1/connections/{conn}").json()["freshness"] == "overdue"
    assert freshness_gauge(api).get("overdue") == 1

    def reconcile() -> None:
        done = run_cli(["reconcile", "--company", cid], env, tmp_path, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    with SseClient(f"{str(api.base_url)}/v1/stream?company_id={cid}", headers=ADMIN_HEADERS) as stream:
        assert stream.next().event == "snapshot"

        def next_change(timeout: float = 30) -> dict[str, Any]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                event = stream.next(timeout=max(0.1, deadline - time.monotonic()))
                if event.event == "connection.freshness_changed":
                    body: dict[str, Any] = event.json()
                    return body
            raise TimeoutError("no connection.freshness_changed")

        fake.control.sync_settings({"*": 168})  # the client moves to Codat's recommended weekly sync
        reconcile()
        change = next_change()
        assert (change["previous"], change["current"], change["event_id"]) == ("overdue", "fresh", None)
        assert (change["connection"]["id"], change["connection"]["freshness"]) == (conn, "fresh")
        assert thresholds(api, conn)["banking-transactions"] == (168 * FACTOR * HOUR, "client_schedule")
        gauge = freshness_gauge(api)
        assert (gauge.get("fresh"), gauge.get("overdue", 0)) == (1, 0)

        fake.control.sync_settings({"banking-transactions": 24}, company_id=cid)  # this company syncs daily
        reconcile()
        change = next_change()
        assert (change["previous"], change["current"], change["overdue_data_types"]) == (
            "fresh",
            "overdue",
            ["banking-transactions"],
        )
        assert thresholds(api, conn)["banking-transactions"] == (24 * FACTOR * HOUR, "company_schedule")
        assert freshness_gauge(api).get("overdue") == 1
