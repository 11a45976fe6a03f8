"""Bundles end to end beside the fake Codat, on `synctrack dev` (SQLite) and on `synctrack web` + two worker
processes (PostgreSQL, Redis), where folds of one bundle's members run at once: signed webhooks of member data
types in, the bundle's `as_of`, spread and stale members out; a bundle refresh reaching the fake Codat as exactly
the refreshes it should; `bundle.ready` on a company token's stream and to a subscription, once per refresh, the
newest refresh only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, bearer, company_token
from tests.support.builders import SECRET, connection_event, iso, read_completed
from tests.support.services import (
    REDIS_URL,
    ServiceProcess,
    free_port,
    fresh_postgres_database,
    postgres_unavailable,
    redis_postgres_env,
    redis_unavailable,
    start_web_and_worker,
    wait_for,
    wait_until_healthy,
)
from tests.support.sse_client import SseClient, SseEvent
from tests.support.subscription_support import dispatcher_ready, post_webhook, service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e]

KEY = "bundles-codat-key"
BUNDLES = "ar=invoices,creditNotes,payments,customers;close=balanceSheet,profitAndLoss"
AR = ["invoices", "creditNotes", "payments", "customers"]
MARKER = "taxRates"
"""A data type in no bundle: its sync, once on the stream, shows that everything sent before it was folded."""


@dataclass
class Dev:
    api: httpx.Client
    fake: FakeCodatServer
    base: str


@dataclass
class Company:
    id: str
    xero: str
    quickbooks: str


@pytest.fixture(scope="module", params=["dev", "postgres"])
def dev(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    if request.param == "postgres" and (reason := redis_unavailable() or postgres_unavailable()):
        pytest.skip(reason)
    tmp: Path = tmp_path_factory.mktemp(f"bundles-{request.param}")
    port = free_port()
    config = Config(sync_seconds=0.2, api_key=KEY)
    with (
        FakeCodatServer(receiver_url=f"http://127.0.0.1:{port}/webhooks/codat", secret=SECRET, config=config) as fake,
        ExitStack() as stack,
    ):
        env = service_env(
            tmp,
            SYNCTRACK_CODAT_BASE_URL=fake.url,
            SYNCTRACK_CODAT_API_KEY=KEY,
            SYNCTRACK_RECONCILE_EVERY="0",
            # The tests' own webhooks stand for Codat here: a reconcile of an overdue company would read the fake's
            # state instead (e.g. a connection Linked that a test's webhook unlinked), whenever it happened to run.
            SYNCTRACK_RECONCILE_OVERDUE_CHECK_SECONDS="0",
            SYNCTRACK_BUNDLES=BUNDLES,
            SYNCTRACK_STREAM_HEARTBEAT_SECONDS="1",
        )
        if request.param == "dev":
            process = ServiceProcess(["dev", "--port", str(port)], env, tmp, "dev")
            stack.callback(process.stop)
            wait_until_healthy(f"http://127.0.0.1:{port}", process)
            processes = [process]
        else:
            namespace = f"synctrack-test-{uuid.uuid4().hex[:10]}"
            env |= redis_postgres_env(stack.enter_context(fresh_postgres_database()), REDIS_URL, namespace)
            upgrade(env["SYNCTRACK_DATABASE_URL"])
            client = redis.Redis.from_url(REDIS_URL)
            stack.callback(lambda: client.delete(*client.scan_iter(f"{namespace}:*")))  # once the processes stop
            processes = list(start_web_and_worker(stack, env, tmp, port, processes=2, threads=2))
            wait_for(lambda: dispatcher_ready(client, namespace), message="the outbound dispatcher reads the feed")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20, headers=ADMIN_HEADERS) as api:
            # Only the webhooks a test sends report syncs: the fake's own results would race them.
            fake.control.webhooks(mode="drop")
            yield Dev(api, fake, f"http://127.0.0.1:{port}")
        stack.close()
        for process in processes:
            assert "Traceback" not in process.output(), process.output()[-3000:]


def ago(**delta: float) -> str:
    return iso(datetime.now(UTC) - timedelta(**delta))


def report(dev: Dev, company: Company, connection: str, generated: str, *data_types: str) -> None:
    """Codat's signed `read.completed`: each data type read successfully, generated at `generated`."""
    results = [(data_type, "Complete") for data_type in data_types]
    body = read_completed(results, company_id=company.id, connection_id=connection)
    post_webhook(dev.api, {**body, "generatedDate": generated})


def bundles(dev: Dev, company: Company) -> dict[str, dict[str, Any]]:
    answer = dev.api.get(f"/v1/companies/{company.id}/bundles")
    assert answer.status_code == 200, answer.text
    return {item["name"]: item for item in answer.json()["items"]}


def new_company(dev: Dev) -> Company:
    """A company with a Xero and a QuickBooks connection, linked; the fake reports no syncs of them (dropped)."""
    dev.fake.control.webhooks(mode="deliver")
    seeded = dev.fake.control.seed(companies=[{"platforms": ["xero", "quickbooks"]}], initial_read=False)[0]
    ids = [conn["id"] for conn in seeded["connections"]]
    for conn in ids:
        wait_for(lambda c=conn: dev.api.get(f"/v1/connections/{c}").json().get("status") == "Linked")
    dev.fake.control.webhooks(mode="drop")
    return Company(seeded["id"], ids[0], ids[1])


def with_history(dev: Dev) -> Company:
    """Members of `ar` fresh but customers (3 days old); invoices also old on QuickBooks; `close`: an old
    balance sheet and no profit and loss."""
    company = new_company(dev)
    report(dev, company, company.xero, ago(days=3), "customers", "balanceSheet")
    report(dev, company, company.quickbooks, ago(days=3), "invoices")
    report(dev, company, company.quickbooks, ago(minutes=20), "payments")
    report(dev, company, company.xero, ago(minutes=10), "invoices", "creditNotes", "payments")
    wait_for(lambda: bundles(dev, company)["ar"]["stale_data_types"] == ["customers"], message="the history folded")
    return company


def queued(dev: Dev) -> list[tuple[str, str]]:
    """(data type, connection) of each refresh the fake Codat was asked for."""
    return sorted(
        (r["path"].rsplit("/", 1)[1], r["query"].removeprefix("connectionId="))
        for r in dev.fake.control.requests()
        if r["method"] == "POST" and "/data/queue/" in r["path"]
    )


def refresh(dev: Dev, company: Company, bundle: str = "ar", **params: str) -> dict[str, Any]:
    answer = dev.api.post(f"/v1/companies/{company.id}/bundles/{bundle}/refresh", params=params)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def until_marker(stream: SseClient, company: Company) -> list[SseEvent]:
    """The stream's events up to the marker's `sync.completed` (sent last, so everything before it was folded),
    and those right after it: a batch folded with the marker announces its `bundle.ready` after its syncs."""
    seen = []
    while True:
        event = stream.next(timeout=20)
        seen.append(event)
        if event.event == "sync.completed" and event.json()["data_type"] == MARKER:
            return seen + stream.drain(quiet=1.0)


def ready_events(events: list[SseEvent]) -> list[dict[str, Any]]:
    return [event.json() for event in events if event.event == "bundle.ready"]


def settled(dev: Dev, company: Company) -> None:
    """Wait until the fake Codat finished the pull operations asked for (so a new refresh is not refused)."""
    with httpx.Client(base_url=dev.fake.url, headers={"Authorization": f"Basic {KEY}"}) as codat:

        def done() -> bool:
            history = codat.get(f"/companies/{company.id}/data/history", params={"pageSize": 500}).json()
            return all(op["isCompleted"] or op["isErrored"] for op in history["results"])

        wait_for(done, message="the fake Codat finished its pull operations")


def test_a_bundle_says_how_coherent_its_members_are_across_linked_connections(dev: Dev) -> None:
    company = new_company(dev)
    assert bundles(dev, company)["ar"] == {
        "name": "ar",
        "data_types": AR,
        "as_of": None,
        "spread_seconds": None,
        "stale_data_types": AR,
        "complete": False,
    }
    oldest, newest = datetime.now(UTC) - timedelta(days=3), datetime.now(UTC) - timedelta(minutes=1)
    report(dev, company, company.xero, iso(oldest), "customers", "balanceSheet")
    report(dev, company, company.quickbooks, iso(oldest), "invoices")
    report(dev, company, company.xero, iso(newest - timedelta(minutes=5)), "invoices", "creditNotes")
    report(dev, company, company.quickbooks, iso(newest), "payments")
    got = wait_for(lambda: (b := bundles(dev, company))["ar"]["complete"] and b, message="ar complete")

    assert got["ar"]["as_of"] == iso(oldest)
    assert got["ar"]["spread_seconds"] == pytest.approx((newest - oldest).total_seconds())
    assert got["ar"]["stale_data_types"] == ["customers"]  # invoices: old on QuickBooks, fresh on Xero
    assert got["close"] == {
        "name": "close",
        "data_types": ["balanceSheet", "profitAndLoss"],
        "as_of": None,
        "spread_seconds": None,
        "stale_data_types": ["balanceSheet", "profitAndLoss"],
        "complete": False,
    }

    unlinked_event = connection_event(
        "connection.disconnected", company_id=company.id, connection_id=company.quickbooks
    )
    post_webhook(dev.api, {**unlinked_event, "generatedDate": ago(seconds=0)})  # only Linked connections count
    unlinked = wait_for(lambda: (b := bundles(dev, company))["ar"]["as_of"] != iso(oldest) and b)
    # payments succeeded on QuickBooks only: with it unlinked, no Linked connection has payments.
    assert (unlinked["ar"]["complete"], unlinked["ar"]["as_of"], unlinked["ar"]["spread_seconds"]) == (
        False,
        None,
        None,
    )
    assert unlinked["ar"]["stale_data_types"] == ["payments", "customers"]


def test_a_bundle_refresh_asks_codat_for_the_stale_members_only_or_all_of_them(dev: Dev) -> None:
    company = with_history(dev)
    dev.fake.control.clear_requests()
    answer = refresh(dev, company)
    assert queued(dev) == [("customers", company.xero)]
    assert answer["data_types"] == ["customers"]
    assert [(a["action"], a["data_type"], a["connection_id"]) for a in answer["actions"]] == [
        ("refresh", "customers", company.xero)
    ]
    audit = dev.api.get("/v1/audit", params={"company_id": company.id}).json()["items"]
    assert [(a["data_type"], a["connection_id"], a["result"]) for a in audit] == [
        ("customers", company.xero, "accepted")
    ]

    settled(dev, company)
    dev.fake.control.clear_requests()
    everything = refresh(dev, company, all="true")
    assert queued(dev) == sorted(
        [
            ("invoices", company.xero),
            ("invoices", company.quickbooks),
            ("creditNotes", company.xero),
            ("payments", company.xero),
            ("payments", company.quickbooks),
            ("customers", company.xero),
        ]
    )
    assert everything["data_types"] == AR and len(everything["actions"]) == 6


def test_bundle_ready_comes_once_when_every_member_succeeded_after_the_refresh(dev: Dev) -> None:
    company = with_history(dev)
    token = company_token(company.id, ["read"])
    with (
        WebhookReceiver() as receiver,
        SseClient(f"{dev.base}/v1/stream", headers=bearer(token), ignore=frozenset({"connection.updated"})) as stream,
    ):
        ready_sub = subscribe(dev.api, receiver.url("/ready"), event_types=["bundle.ready"], company_ids=[company.id])
        receiver.expect("/ready", [ready_sub["secret"]])
        subscribe(dev.api, receiver.url("/syncs"), event_types=["sync.completed"], company_ids=[company.id])
        assert stream.next().event == "snapshot"
        requested = refresh(dev, company)["requested_at"]

        report(dev, company, company.xero, ago(seconds=0), "customers", MARKER)
        assert ready_events(until_marker(stream, company)) == []  # invoices, creditNotes, payments: from before

        finished = datetime.now(UTC)
        report(dev, company, company.quickbooks, iso(finished), "invoices", "payments")
        report(dev, company, company.xero, iso(finished + timedelta(seconds=1)), "creditNotes")
        report(dev, company, company.xero, iso(finished + timedelta(seconds=2)), MARKER)
        ready = ready_events(until_marker(stream, company))
        customers_at = bundles(dev, company)["ar"]["as_of"]
        assert ready == [
            {
                "company_id": company.id,
                "bundle": "ar",
                "data_types": AR,
                "as_of": customers_at,
                "requested_at": requested,
                "event_id": ready[0]["event_id"] if ready else None,
            }
        ]
        assert customers_at is not None and customers_at >= requested

        report(dev, company, company.xero, ago(seconds=0), *AR, MARKER)  # everything again: no second one
        assert ready_events(until_marker(stream, company)) == []
        wait_for(lambda: receiver.at("/ready"), message="bundle.ready delivered")
        wait_for(
            lambda: sum(r.body["data"]["data_type"] == MARKER for r in receiver.at("/syncs")) == 3,
            message="the three markers delivered",
        )
        delivered = receiver.at("/ready")
        assert [(r.body["type"], r.body["data"]["requested_at"]) for r in delivered] == [("bundle.ready", requested)]
        assert all(r.verified[ready_sub["secret"]] for r in delivered)
        assert not any(r.body["type"] == "bundle.ready" for r in receiver.at("/syncs"))


def test_a_new_refresh_of_a_bundle_supersedes_the_previous_one(dev: Dev) -> None:
    company = with_history(dev)
    with SseClient(f"{dev.base}/v1/stream?company_id={company.id}", headers=ADMIN_HEADERS) as stream:
        assert stream.next().event == "snapshot"
        first = refresh(dev, company)["requested_at"]
        settled(dev, company)
        second = refresh(dev, company)["requested_at"]
        assert second > first
        report(dev, company, company.xero, ago(seconds=0), *AR, MARKER)
        ready = ready_events(until_marker(stream, company))
    assert [(event["bundle"], event["requested_at"]) for event in ready] == [("ar", second)]


def test_an_unknown_bundle_is_404_and_a_refresh_needs_the_refresh_right(dev: Dev) -> None:
    company = with_history(dev)
    dev.fake.control.clear_requests()
    unknown = dev.api.post(f"/v1/companies/{company.id}/bundles/payroll/refresh")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown_bundle", "detail": "no bundle named 'payroll'; known: ar, close"}
    for method in ("GET", "POST"):
        path = "/v1/companies/no-such-company/bundles" + ("/ar/refresh" if method == "POST" else "")
        missing = dev.api.request(method, path)
        assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    unclear = dev.api.post(f"/v1/companies/{company.id}/bundles/ar/refresh", params={"all": "maybe"})
    assert unclear.status_code == 400 and unclear.json()["error"] == "invalid_parameter"

    reader = bearer(company_token(company.id, ["read"]))
    assert dev.api.get(f"/v1/companies/{company.id}/bundles", headers=reader).status_code == 200
    refused = dev.api.post(f"/v1/companies/{company.id}/bundles/ar/refresh", headers=reader)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert queued(dev) == []

    refresher = bearer(company_token(company.id, ["refresh"]))
    assert dev.api.post(f"/v1/companies/{company.id}/bundles/ar/refresh", headers=refresher).status_code == 202
    assert queued(dev) == [("customers", company.xero)]


def test_a_bundle_refresh_counts_as_one_action_against_the_companys_limit(dev: Dev) -> None:
    company = new_company(dev)  # no data type synced yet: no connection has a member, nothing reaches Codat
    refresher = bearer(company_token(company.id, ["read", "refresh"]))
    path = f"/v1/companies/{company.id}/bundles/close/refresh"
    answers = [dev.api.post(path, headers=refresher) for _ in range(11)]  # SYNCTRACK_ACTIONS_PER_MINUTE: 10
    assert [a.status_code for a in answers] == [202] * 10 + [429]
    assert answers[0].json()["actions"] == [] and answers[0].json()["data_types"] == []
    assert answers[-1].json()["error"] == "rate_limited" and int(answers[-1].headers["Retry-After"]) > 0
    audit = dev.api.get("/v1/audit", params={"company_id": company.id}).json()["items"]
    assert [(a["action"], a["result"]) for a in audit] == [("refresh", "rate_limited")]
