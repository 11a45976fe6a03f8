"""Reconnect over HTTP against the fake Codat in one-time-link mode: each call answers the link Codat
issued at that moment (a fresh `?otp=…`, never the stored link), only for connections a customer has
reason to re-link, with the `reconnect` right, audited whether accepted or refused, and Codat's
failures answered as for every action. End to end, the link stored from a webhook is dead once a day
old while the one Reconnect answers works, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS, bearer, company_token
from tests.support.builders import connection_event, iso, read_completed
from tests.support.ledger_fill import deliver
from tests.support.services import wait_for

KEY = "test-codat-key-reconnect"
STORED = "https://link.example/stored-from-the-last-webhook?otp=used-long-ago"


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY, one_time_links=True)) as server:
        server.control.configure(link_base_url=server.url)
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


def now_stamped(body: dict[str, Any], minutes_ago: float = 0) -> dict[str, Any]:
    return {**body, "generatedDate": iso(datetime.now(UTC) - timedelta(minutes=minutes_ago))}


def known_connection(
    fake: FakeCodatServer, settings: Settings, event_type: str, status: str, *results: tuple[str, str]
) -> tuple[str, str]:
    """A connection of a company in Codat, with `status` there and in the ledger (its stored link: STORED),
    and `results` folded as its latest syncs. Returns (company id, connection id)."""
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    company_id, connection_id = company["id"], company["connections"][0]["id"]
    fake.control.set_status(connection_id, status, notify=False)
    ids = {"company_id": company_id, "connection_id": connection_id}
    event = now_stamped(connection_event(event_type, status=status, **ids), minutes_ago=10)
    event["payload"]["connection"]["linkUrl"] = STORED
    deliver(settings, event)
    for minutes_ago, result in enumerate(reversed(results)):
        deliver(settings, now_stamped(read_completed([result], **ids), minutes_ago=minutes_ago))
    fake.control.clear_requests()
    return company_id, connection_id


def deauthorized(fake: FakeCodatServer, settings: Settings) -> tuple[str, str]:
    return known_connection(fake, settings, "connection.disconnected", "Deauthorized")


def reconnect_audit(client: TestClient, connection_id: str) -> list[dict[str, Any]]:
    params = {"connection_id": connection_id, "action": "reconnect"}
    items: list[dict[str, Any]] = client.get("/v1/audit", params=params).json()["items"]
    return items


def codat_calls(fake: FakeCodatServer) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in fake.control.requests()]


def test_each_reconnect_answers_the_fresh_link_codat_just_issued_never_the_stored_one(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company_id, connection_id = deauthorized(fake, settings)
    answers = []
    for _ in range(2):
        before = datetime.now(UTC)
        answer = client.post(f"/v1/connections/{connection_id}/reconnect")
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert set(body) == {"connection_id", "company_id", "link_url", "fetched_at"}
        assert (body["connection_id"], body["company_id"]) == (connection_id, company_id)
        assert datetime.fromisoformat(body["fetched_at"]) >= before.replace(microsecond=0)
        issued = fake.control.links()[-1]
        assert body["link_url"] == issued["url"] and issued["connection_id"] == connection_id
        answers.append(body["link_url"])

    start = f"{fake.url}/companies/{company_id}/connections/{connection_id}/start?otp="
    assert all(url.startswith(start) for url in answers)
    assert answers[0] != answers[1] and STORED not in answers
    assert codat_calls(fake) == [("GET", f"/companies/{company_id}/connections/{connection_id}")] * 2
    connection = client.get(f"/v1/connections/{connection_id}").json()
    assert (connection["link_url"], connection["status"]) == (STORED, "Deauthorized")
    audit = reconnect_audit(client, connection_id)
    assert [(a["result"], a["codat_status"], a["actor"][:6]) for a in audit] == [("accepted", 200, "admin:")] * 2
    assert not any(answers[0].split("?")[1] in str(a) or answers[1].split("?")[1] in str(a) for a in audit)


@pytest.mark.parametrize(
    ("event_type", "status", "results"),
    [
        ("connection.created", "PendingAuth", ()),
        ("connection.disconnected", "Unlinked", (("invoices", "Complete"),)),
        ("connection.connected", "Linked", (("bills", "Complete"), ("invoices", "AuthError"))),
    ],
    ids=["pending-auth", "unlinked", "linked-with-an-auth-error"],
)
def test_a_connection_its_customer_has_reason_to_re_link_can_be_reconnected(
    client: TestClient,
    fake: FakeCodatServer,
    settings: Settings,
    event_type: str,
    status: str,
    results: tuple[tuple[str, str], ...],
) -> None:
    _, connection_id = known_connection(fake, settings, event_type, status, *results)
    answer = client.post(f"/v1/connections/{connection_id}/reconnect")
    assert answer.status_code == 200, answer.text
    assert answer.json()["link_url"] == fake.control.links()[-1]["url"]


@pytest.mark.parametrize(
    "results",
    [(), (("invoices", "Complete"),), (("invoices", "AuthError"), ("invoices", "Complete"), ("bills", "FetchError"))],
    ids=["no-syncs", "synced", "auth-error-since-resolved"],
)
def test_a_linked_connection_without_a_latest_auth_error_is_409_audited_without_calling_codat(
    client: TestClient, fake: FakeCodatServer, settings: Settings, results: tuple[tuple[str, str], ...]
) -> None:
    _, connection_id = known_connection(fake, settings, "connection.connected", "Linked", *results)
    answer = client.post(f"/v1/connections/{connection_id}/reconnect")
    assert (answer.status_code, answer.json()["error"]) == (409, "not_reconnectable")
    assert codat_calls(fake) == []
    [audit] = reconnect_audit(client, connection_id)
    assert (audit["result"], audit["codat_status"]) == ("failed", None)
    assert audit["detail"].startswith("not_reconnectable: ")


def test_an_unknown_or_deleted_connection_is_404_without_calling_codat(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company_id, connection_id = deauthorized(fake, settings)
    gone = connection_event("connection.deleted", company_id=company_id, connection_id=connection_id)
    deliver(settings, now_stamped(gone))
    for ident in ("no-such-connection", connection_id):
        answer = client.post(f"/v1/connections/{ident}/reconnect")
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    assert codat_calls(fake) == []


def test_a_company_token_needs_the_reconnect_right(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    company_id, connection_id = deauthorized(fake, settings)
    url = f"/v1/connections/{connection_id}/reconnect"
    everything_else = company_token(company_id, ["read", "refresh", "disconnect", "delete"])
    refused = client.post(url, headers=bearer(everything_else))
    assert (refused.status_code, refused.json()) == (
        403,
        {"error": "forbidden", "detail": "this token does not have the 'reconnect' right"},
    )
    assert codat_calls(fake) == []

    minted = client.post("/v1/tokens", json={"company_id": company_id, "rights": ["read", "reconnect"]})
    assert minted.status_code == 201 and minted.json()["rights"] == ["read", "reconnect"]
    answer = client.post(url, headers=bearer(minted.json()["token"]))
    assert answer.status_code == 200 and answer.json()["link_url"] == fake.control.links()[-1]["url"]
    [audit] = reconnect_audit(client, connection_id)
    assert audit["actor"] == f"company:{company_id}:{minted.json()['token_id']}"


FAILURES = [
    # (fault on Codat's GET of the connection, expected status, expected error, Codat status in the audit)
    ({"status": 404, "message": "Data connection not found"}, 404, "not_found", 404),
    ({"status": 500}, 502, "codat_unavailable", 500),
    ({"delay_seconds": 2.0}, 503, "codat_unavailable", None),
    ({"status": 429, "retry_after": 120}, 503, "codat_unavailable", 429),
    ({"status": 401}, 502, "codat_auth_failed", 401),
    ({"status": 200, "message": "no connection here"}, 502, "codat_error", 200),  # an answer without a linkUrl
]


@pytest.mark.parametrize(("fault", "status", "error", "codat_status"), FAILURES)
def test_a_codat_failure_answers_the_mapped_error_is_audited_and_changes_nothing(
    client: TestClient,
    fake: FakeCodatServer,
    settings: Settings,
    fault: dict[str, Any],
    status: int,
    error: str,
    codat_status: int | None,
) -> None:
    _, connection_id = deauthorized(fake, settings)
    before = client.get(f"/v1/connections/{connection_id}").json()
    fake.control.fault(f"/connections/{connection_id}$", method="GET", **fault)
    answer = client.post(f"/v1/connections/{connection_id}/reconnect")
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    if codat_status == 429:
        assert answer.headers["retry-after"] == "120"
    assert KEY not in answer.text
    assert client.get(f"/v1/connections/{connection_id}").json() == before
    [audit] = reconnect_audit(client, connection_id)
    assert (audit["result"], audit["codat_status"]) == ("failed", codat_status)
    assert audit["detail"].startswith(f"{error}: ")


@pytest.mark.e2e
@pytest.mark.redis
def test_the_link_stored_from_a_webhook_dies_while_the_one_reconnect_answers_works_once(
    dev_and_fake: tuple[httpx.Client, FakeCodatServer, dict[str, str]],
) -> None:
    api, fake, _ = dev_and_fake
    fake.control.configure(one_time_links=True, link_base_url=fake.url, link_ttl_seconds=1)
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], initial_read=False)[0]
    connection_id = company["connections"][0]["id"]
    fake.control.set_status(connection_id, "Deauthorized")  # Codat's webhook carries a link good for 1 s

    def connection() -> dict[str, Any]:
        body: dict[str, Any] = api.get(f"/v1/connections/{connection_id}").json()
        return body

    wait_for(lambda: connection().get("status") == "Deauthorized", message="the disconnect webhook folded")
    stored = connection()["link_url"]
    assert "?otp=" in stored
    time.sleep(1.2)  # a day, in the fake's time
    fake.control.configure(link_ttl_seconds=86_400)

    fresh = api.post(f"/v1/connections/{connection_id}/reconnect")
    assert fresh.status_code == 200, fresh.text
    link = fresh.json()["link_url"]
    assert link != stored and link == fake.control.links()[-1]["url"]
    assert connection()["link_url"] == stored, "the fresh link is not stored"

    dead = httpx.get(stored)
    assert (dead.status_code, "expired" in dead.text) == (410, True)
    opened = httpx.get(link)
    assert opened.status_code == 200, opened.text
    wait_for(lambda: connection().get("status") == "Linked", message="the customer's re-link reached the ledger")
    again = httpx.get(link)
    assert (again.status_code, "already been used" in again.text) == (410, True)
    audit = api.get("/v1/audit", params={"connection_id": connection_id, "action": "reconnect"}).json()["items"]
    assert [(a["result"], a["codat_status"]) for a in audit] == [("accepted", 200)]
