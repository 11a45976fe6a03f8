"""Actions over HTTP against the fake Codat: 202 with the recorded action, syncs started at the click,
the audit log, and every Codat failure answered as documented with nothing changed locally."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS
from tests.support.builders import connection_event, iso, read_completed
from tests.support.ledger_fill import deliver
from workers.ledger.changes import stream_key

KEY = "test-codat-key"


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY)) as server:
        yield server


@pytest.fixture
def settings(embedded_settings: Settings, fake: FakeCodatServer) -> Settings:
    return embedded_settings.model_copy(
        update={
            "codat_base_url": fake.url,
            "codat_api_key": KEY,
            "codat_timeout_seconds": 1.0,
            "codat_max_retries": 2,
            **AUTH_SETTINGS,
        }
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


def now_stamped(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "generatedDate": iso(datetime.now(UTC))}


def linked_company(fake: FakeCodatServer, settings: Settings, *platforms: str) -> dict[str, Any]:
    """A company in Codat whose connections the ledger already knows (connected, first read done)."""
    company = fake.control.seed(companies=[{"platforms": list(platforms)}], announce=False, initial_read=False)[0]
    for conn in company["connections"]:
        ids = {"connection_id": conn["id"], "company_id": company["id"]}
        deliver(settings, connection_event(minutes=0, platform=conn["platformName"], **ids))
        deliver(settings, read_completed([("invoices", "Complete")], minutes=5, **ids))
    fake.control.clear_requests()
    return company


def unchanged(client: TestClient, company_id: str) -> None:
    assert client.get("/v1/syncs/active", params={"company_id": company_id}).json()["items"] == []


def last_audit(client: TestClient, company_id: str) -> dict[str, Any]:
    item: dict[str, Any] = client.get("/v1/audit", params={"company_id": company_id}).json()["items"][0]
    return item


def test_refreshing_one_data_type_starts_an_active_sync_at_the_click_and_a_webhook_confirms_it(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero")
    conn = company["connections"][0]["id"]
    answer = client.post(f"/v1/companies/{company['id']}/refresh/bills", params={"connection_id": conn})
    assert answer.status_code == 202
    action = answer.json()
    assert action["actor"].startswith("admin:")
    assert (action["action"], action["result"], action["codat_status"], action["data_type"]) == (
        "refresh",
        "accepted",
        200,
        "bills",
    )
    [sync] = action["syncs"]
    history = httpx.get(f"{fake.url}/companies/{company['id']}/data/history", headers={"Authorization": f"Basic {KEY}"})
    assert sync["id"] == next(op["id"] for op in history.json()["results"] if op["dataType"] == "bills")
    assert (sync["phase"], sync["source"], sync["data_type"], sync["event_id"]) == (
        "active",
        "action",
        "bills",
        f"audit:{action['id']}",
    )
    active = client.get("/v1/syncs/active", params={"company_id": company["id"]}).json()["items"]
    assert [s["id"] for s in active] == [sync["id"]]
    feed = services(client.app).feed  # type: ignore[arg-type]
    entries: Any = feed.redis.xrange(stream_key(settings.redis_namespace))
    started = [f for _, f in entries if f[b"event"] == b"sync.started"]
    assert json.loads(started[-1][b"data"])["id"] == sync["id"]

    result = read_completed([("bills", "Complete")], connection_id=conn, company_id=company["id"])
    (confirming,) = deliver(settings, now_stamped(result))
    assert client.get("/v1/syncs/active", params={"company_id": company["id"]}).json()["items"] == []
    audit = last_audit(client, company["id"])
    assert audit["confirmed_by_event_id"] == confirming and audit["confirmed_at"]
    connection = client.get(f"/v1/connections/{conn}").json()
    assert connection["last_sync_at"] > sync["requested_at"]


def test_refreshing_everything_records_one_star_sync_per_linked_connection(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero", "hsbc")
    answer = client.post(f"/v1/companies/{company['id']}/refresh")
    assert answer.status_code == 202 and answer.json()["codat_status"] == 204
    syncs = answer.json()["syncs"]
    assert sorted(s["connection_id"] for s in syncs) == sorted(c["id"] for c in company["connections"])
    assert {(s["data_type"], s["phase"], s["source"]) for s in syncs} == {("*", "active", "action")}


def test_unlink_folds_codats_answer_and_keeps_the_history(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "hsbc")
    conn = company["connections"][0]["id"]
    answer = client.post(f"/v1/connections/{conn}/unlink")
    assert answer.status_code == 202
    body = answer.json()
    assert (body["action"], body["connection"]["status"]) == ("unlink", "Unlinked")
    assert body["connection"]["disconnected_at"] is not None
    assert len(client.get(f"/v1/connections/{conn}/syncs").json()["items"]) == 1
    assert [(r["method"], r["status"]) for r in fake.control.requests()] == [("PATCH", 200)]


def test_delete_removes_history_and_stored_bodies_but_keeps_the_audit_record(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "shopify")
    conn = company["connections"][0]["id"]
    events = client.get("/v1/events", params={"connection_id": conn}).json()["items"]
    assert events and client.get(f"/v1/events/{events[0]['id']}").json()["body"] is not None
    answer = client.delete(f"/v1/connections/{conn}")
    assert answer.status_code == 202
    assert answer.json()["connection"]["deleted_at"] is not None
    detail = client.get(f"/v1/connections/{conn}").json()
    assert (detail["deleted_at"] is not None, detail["data_types"]) == (True, [])
    assert client.get(f"/v1/connections/{conn}/syncs").json()["items"] == []
    assert all(client.get(f"/v1/events/{e['id']}").json()["body"] is None for e in events)
    assert last_audit(client, company["id"])["action"] == "delete"
    again = client.delete(f"/v1/connections/{conn}")
    assert (again.status_code, again.json()["error"]) == (404, "not_found")


def test_an_action_on_a_connection_the_ledger_does_not_know_is_404_without_calling_codat(
    client: TestClient, fake: FakeCodatServer
) -> None:
    answer = client.post("/v1/connections/nope/unlink")
    assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    assert fake.control.requests() == []


def test_a_data_type_name_that_cannot_be_one_is_400(client: TestClient) -> None:
    answer = client.post("/v1/companies/c/refresh/bad%20type")
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_parameter")


FAILURES = [
    # (fault on the queue call, expected status, expected error, Codat status in the audit)
    ({"status": 404, "message": "Company not found"}, 404, "not_found", 404),
    ({"status": 409}, 409, "sync_already_in_progress", 409),
    ({"status": 500}, 502, "codat_unavailable", 500),
    ({"delay_seconds": 2.0}, 503, "codat_unavailable", None),
    ({"status": 429, "retry_after": 120}, 503, "codat_unavailable", 429),
]


@pytest.mark.parametrize(("fault", "status", "error", "codat_status"), FAILURES)
def test_a_refused_refresh_answers_the_mapped_error_records_it_and_changes_nothing(
    client: TestClient,
    fake: FakeCodatServer,
    settings: Settings,
    fault: dict[str, Any],
    status: int,
    error: str,
    codat_status: int | None,
) -> None:
    company = linked_company(fake, settings, "xero")
    before = client.get(f"/v1/connections/{company['connections'][0]['id']}").json()
    fake.control.fault("/data/queue/", **fault)
    answer = client.post(f"/v1/companies/{company['id']}/refresh/bills")
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    unchanged(client, company["id"])
    assert client.get(f"/v1/connections/{company['connections'][0]['id']}").json() == before
    audit = last_audit(client, company["id"])
    assert (audit["result"], audit["codat_status"]) == ("failed", codat_status)
    assert audit["detail"].startswith(error)
    if status == 503 and codat_status == 429:
        assert answer.headers["retry-after"] == "120"


def test_a_429_with_a_short_retry_after_is_waited_out_and_the_refresh_goes_through(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero")
    fake.control.fault("/data/queue/", status=429, retry_after=1, times=1)
    started = time.monotonic()
    answer = client.post(f"/v1/companies/{company['id']}/refresh/bills")
    assert answer.status_code == 202 and time.monotonic() - started >= 1.0
    assert [r["status"] for r in fake.control.requests()] == [429, 200]


def test_a_500_then_success_on_unlink_is_retried_and_succeeds(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero")
    fake.control.fault("/connections/", status=500, times=1)
    answer = client.post(f"/v1/connections/{company['connections'][0]['id']}/unlink")
    assert answer.status_code == 202
    assert [r["status"] for r in fake.control.requests()] == [500, 200]


def test_a_wrong_api_key_is_502_naming_the_setting_not_the_key(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero")
    fake.control.configure(api_key="another-key")
    answer = client.post(f"/v1/connections/{company['connections'][0]['id']}/unlink")
    assert (answer.status_code, answer.json()["error"]) == (502, "codat_auth_failed")
    assert "SYNCTRACK_CODAT_API_KEY" in answer.json()["detail"] and KEY not in answer.text
    assert client.get(f"/v1/connections/{company['connections'][0]['id']}").json()["status"] == "Linked"


def test_the_audit_log_filters_and_pages_newest_first(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company = linked_company(fake, settings, "xero", "hsbc")
    for conn in company["connections"]:
        assert client.post(f"/v1/connections/{conn['id']}/unlink").status_code == 202
    first = client.get("/v1/audit", params={"company_id": company["id"], "limit": 1}).json()
    assert first["items"][0]["connection_id"] == company["connections"][1]["id"]
    second = client.get("/v1/audit", params={"company_id": company["id"], "cursor": first["next_cursor"]}).json()
    assert [i["connection_id"] for i in second["items"]] == [company["connections"][0]["id"]]
    assert client.get("/v1/audit", params={"action": "delete", "company_id": company["id"]}).json()["items"] == []
    assert client.get("/v1/audit", params={"action": "explode"}).status_code == 400
