"""`GET /v1/connections/{connection_id}/timeline` over HTTP: a connection's story newest first, from webhooks folded
in any order, its syncs, the requests made through Synctrack (against the fake Codat) and its announced health and
freshness changes; paged with cursors; confined to a company token's own company."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS, bearer, company_token
from tests.support.builders import at, connection_error, connection_event, iso, read_completed
from tests.support.ledger_fill import deliver

KEY = "test-codat-key"
ANNOUNCED = ("health_changed", "freshness_changed")


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY)) as server:
        yield server


@pytest.fixture
def settings(embedded_settings: Settings, fake: FakeCodatServer) -> Settings:
    return embedded_settings.model_copy(
        update={"codat_base_url": fake.url, "codat_api_key": KEY, "codat_max_retries": 0, **AUTH_SETTINGS}
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


def timeline(client: TestClient, connection_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/connections/{connection_id}/timeline", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def story(items: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    """The items that do not depend on when things were folded: (at, kind, summary, data type)."""
    return [(i["at"], i["kind"], i["summary"], i["data_type"]) for i in items if i["kind"] not in ANNOUNCED]


@pytest.mark.parametrize("order", ["as_generated", "reversed"])
def test_the_timeline_tells_a_connections_story_newest_first_whatever_the_order_webhooks_came_in(
    client: TestClient, fake: FakeCodatServer, settings: Settings, order: str
) -> None:
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    ids = {"connection_id": company["connections"][0]["id"], "company_id": company["id"]}
    connection_id = ids["connection_id"]
    webhooks = [
        connection_event("connection.created", minutes=0, platform="Xero", **ids),
        connection_event(
            "connection.failed", minutes=2, platform="Xero", errors=[connection_error("403", "User cancelled")], **ids
        ),
        connection_event(minutes=5, platform="Xero", **ids),
        read_completed([("invoices", "Complete"), ("bills", "Complete")], minutes=10, initial=True, **ids),
        read_completed([("invoices", "FetchError")], minutes=20, **ids),
    ]
    if order == "reversed":
        webhooks.reverse()
    message_ids = dict(zip([id(w) for w in webhooks], deliver(settings, *webhooks), strict=True))
    failed_read = message_ids[id(next(w for w in webhooks if w["eventType"] == "read.completed"))]

    refresh = client.post(f"/v1/companies/{company['id']}/refresh/invoices", params={"connection_id": connection_id})
    assert refresh.status_code == 202, refresh.text
    audit_id = refresh.json()["id"]
    disconnected = connection_event("connection.disconnected", minutes=30, status="Unlinked", platform="Xero", **ids)
    (disconnect_id,) = deliver(settings, disconnected)

    items = timeline(client, connection_id)["items"]
    requested = [i for i in items if i["kind"] == "refresh_requested"]
    assert requested == [
        {
            "at": requested[0]["at"],
            "kind": "refresh_requested",
            "summary": "A refresh of invoices was requested by admin:" + requested[0]["actor"].split(":")[1],
            "data_type": "invoices",
            "event_id": f"audit:{audit_id}",
            "actor": requested[0]["actor"],
        }
    ]
    assert requested[0]["actor"].startswith("admin:")
    # The webhooks' story, at Codat's times (the request above is newer: it was made today).
    webhook_story = [s for s in story(items) if s[1] != "refresh_requested"]
    assert webhook_story == [
        (iso(at(30)), "disconnected", "Xero was disconnected by the customer", None),
        (iso(at(20)), "sync_failed", "Invoices failed: FetchError", "invoices"),
        (iso(at(10)), "initial_read_completed", "The first read of all data from Xero finished", None),
        (iso(at(10)), "sync_succeeded", "Invoices synced", "invoices"),
        (iso(at(10)), "sync_succeeded", "Bills synced", "bills"),
        (iso(at(5)), "linked", "Xero was linked", None),
        (iso(at(2)), "link_failed", "Linking Xero failed: User cancelled", None),
        (iso(at(0)), "created", "A connection to Xero was created, waiting for the customer to link it", None),
    ]
    by_kind = {i["kind"]: i for i in items}
    assert by_kind["sync_failed"]["event_id"] == failed_read
    assert by_kind["disconnected"]["event_id"] == disconnect_id
    assert all(i["actor"] is None for i in items if i["kind"] != "refresh_requested")
    # What was announced of its health is part of the story too, last first.
    health = [i for i in items if i["kind"] == "health_changed"]
    assert health[0]["summary"].endswith("to unlinked") and health[0]["event_id"] == disconnect_id
    assert health[-1]["summary"].startswith("Health: ")
    assert any(i["kind"] == "freshness_changed" for i in items)
    assert [i["at"] for i in items] == sorted((i["at"] for i in items), reverse=True)


def test_the_timeline_pages_without_gaps_or_repeats(client: TestClient, settings: Settings) -> None:
    ids: dict[str, Any] = {"connection_id": "conn-paged", "company_id": "co-paged"}
    deliver(
        settings,
        connection_event(minutes=0, platform="Sage", **ids),
        *[read_completed([("invoices", "Complete"), ("bills", "FetchError")], minutes=m, **ids) for m in (10, 10, 20)],
        connection_event("connection.disconnected", minutes=30, status="Deauthorized", platform="Sage", **ids),
    )
    whole = timeline(client, "conn-paged", limit=500)
    assert whole["next_cursor"] is None
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = timeline(client, "conn-paged", limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 3
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == whole["items"]
    assert len(paged) > 6
    assert ("disconnected", "Sage withdrew Codat's access (Deauthorized)") in {
        (i["kind"], i["summary"]) for i in whole["items"]
    }


def test_a_company_token_sees_its_own_connections_timeline_only(client: TestClient, settings: Settings) -> None:
    deliver(
        settings,
        connection_event(connection_id="conn-mine", company_id="co-mine"),
        connection_event(connection_id="conn-theirs", company_id="co-theirs"),
    )
    mine = bearer(company_token("co-mine"))
    assert client.get("/v1/connections/conn-mine/timeline", headers=mine).status_code == 200
    theirs = client.get("/v1/connections/conn-theirs/timeline", headers=mine)
    unknown = client.get("/v1/connections/conn-none/timeline", headers=mine)
    assert (theirs.status_code, theirs.json()) == (
        404,
        {"error": "not_found", "detail": "no connection with id 'conn-theirs'"},
    )
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "not_found", "detail": "no connection with id 'conn-none'"},
    )
    bad = client.get("/v1/connections/conn-mine/timeline", params={"cursor": "nonsense"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_parameter")
