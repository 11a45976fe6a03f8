"""How long a sync usually takes: a finished sync keeps the time of the request it answered (a link, a refresh),
whatever the order its webhooks came in; an active sync carries the typical duration of its connection's (or its
platform's) data type and when it should end — over HTTP, with refreshes through the fake Codat."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import at, connection_event, iso, read_completed
from tests.support.ledger_fill import deliver
from tests.support.services import wait_for


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def ledger_settings(embedded_settings: Settings, database_url: str) -> Settings:
    """The embedded default on SQLite, and again with its ledger on the real PostgreSQL."""
    return embedded_settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def client(ledger_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ledger_settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


@pytest.mark.parametrize("order", ["link_first", "results_first"])
def test_a_finished_sync_keeps_the_time_of_the_link_it_answered_in_any_order(
    client: TestClient, ledger_settings: Settings, order: str
) -> None:
    linked = connection_event(minutes=0)
    first_read = read_completed([("invoices", "Complete"), ("bills", "FetchError")], minutes=4)
    later_read = read_completed([("invoices", "Complete")], minutes=60)  # a scheduled read: nothing asked for it
    webhooks = [linked, first_read, later_read] if order == "link_first" else [later_read, first_read, linked]
    deliver(ledger_settings, *webhooks)
    syncs = client.get("/v1/connections/ee2eb431-c0fa-4dc9-93fa-d29781c12bcd/syncs").json()["items"]
    assert [(s["data_type"], s["phase"], s["requested_at"], s["completed_at"]) for s in syncs] == [
        ("invoices", "succeeded", None, iso(at(60))),
        ("invoices", "succeeded", iso(at(0)), iso(at(4))),
        ("bills", "failed", iso(at(0)), iso(at(4))),
    ]
    assert all(s["typical_duration_seconds"] is None and s["expected_completion_at"] is None for s in syncs)


def refresh(api: httpx.Client, company_id: str, connection_id: str, data_type: str) -> dict[str, Any]:
    response = api.post(f"/v1/companies/{company_id}/refresh/{data_type}", params={"connection_id": connection_id})
    assert response.status_code == 202, response.text
    (sync,) = response.json()["syncs"]
    return dict(sync)


def settled(api: httpx.Client, connection_id: str) -> bool:
    """The connection is known, its first read folded, and nothing is syncing."""
    response = api.get(f"/v1/connections/{connection_id}")
    if response.status_code != 200:
        return False
    body = response.json()
    return bool(body["initial_read_completed_at"]) and not body["sync_active"]


def test_an_active_sync_says_how_long_its_kind_usually_takes_and_when_it_should_end(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]],
) -> None:
    api, fake, _ = dev_and_fake
    fake.control.configure(sync_seconds=0.3)
    first, second = fake.control.seed(companies=[{"platforms": ["xero", "hsbc"]}, {"platforms": ["xero"]}])
    xero = {c["platformName"]: c["id"] for c in first["connections"]}["Xero"]
    hsbc = {c["platformName"]: c["id"] for c in first["connections"]}["HSBC"]
    other_xero = second["connections"][0]["id"]
    for conn in (xero, hsbc, other_xero):
        wait_for(lambda conn=conn: settled(api, conn), timeout=30, message="first reads folded")

    for _ in range(3):  # three refreshes of Xero's invoices, each answered by Codat's read.completed
        refresh(api, first["id"], xero, "invoices")
        wait_for(lambda: settled(api, xero), timeout=30, message="the refresh answered")
    finished = [s for s in api.get(f"/v1/connections/{xero}/syncs", params={"data_type": "invoices"}).json()["items"]]
    durations = [(parse(s["completed_at"]) - parse(s["requested_at"])).total_seconds() for s in finished]
    assert len(durations) == 4 and all(0 <= d < 30 for d in durations)  # the first read answered the link

    fake.control.configure(sync_seconds=60)  # the next reads take long enough to watch
    started = refresh(api, first["id"], xero, "invoices")
    assert started["typical_duration_seconds"] == pytest.approx(statistics.median(durations))
    expected = parse(started["requested_at"]) + timedelta(seconds=started["typical_duration_seconds"])
    assert parse(started["expected_completion_at"]) == expected
    (active,) = api.get("/v1/syncs/active", params={"connection_id": xero}).json()["items"]
    assert (active["typical_duration_seconds"], active["expected_completion_at"]) == (
        started["typical_duration_seconds"],
        started["expected_completion_at"],
    )

    # Another company's Xero has one sync of invoices of its own: Xero's typical duration across companies.
    (own,) = api.get(f"/v1/connections/{other_xero}/syncs", params={"data_type": "invoices"}).json()["items"]
    own_duration = (parse(own["completed_at"]) - parse(own["requested_at"])).total_seconds()
    across = refresh(api, second["id"], other_xero, "invoices")
    assert across["typical_duration_seconds"] == pytest.approx(statistics.median([*durations, own_duration]))
    # HSBC has no platform history of three: nothing to say.
    alone = refresh(api, first["id"], hsbc, "banking-accounts")
    assert (alone["typical_duration_seconds"], alone["expected_completion_at"]) == (None, None)
    assert datetime.now(UTC) - parse(alone["requested_at"]) < timedelta(minutes=1)
