"""The read API over a ledger filled through the worker's own path (`handle_webhook`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from redis.asyncio import Redis as AsyncRedis
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import COMPANY, CONNECTION, connection_event, fixture, legacy_alert, read_completed
from tests.support.ledger_fill import deliver
from tests.support.services import NoRedis
from workers.runtime.db import upgrade


@pytest.fixture
def settings(database_url: str, embedded_settings: Settings) -> Settings:
    upgrade(database_url)
    return embedded_settings.model_copy(update={"database_url": database_url, "embedded": False})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    services(app).redis = cast(AsyncRedis, NoRedis())
    with TestClient(app, headers=ADMIN_HEADERS) as test_client:
        yield test_client


def test_companies_list_their_connection_count(client: TestClient, settings: Settings) -> None:
    deliver(
        settings,
        connection_event(),
        connection_event(connection_id="c2"),
        connection_event(connection_id="c3", company_id="other"),
    )
    body = client.get("/v1/companies").json()
    assert body["next_cursor"] is None
    assert {(c["id"], c["connection_count"]) for c in body["items"]} == {(COMPANY, 2), ("other", 1)}


def test_a_connection_shows_platform_status_syncs_and_metadata(client: TestClient, settings: Settings) -> None:
    deliver(settings, fixture("connection.connected"), fixture("read.completed.initial"), fixture("read.completed"))
    conn = client.get(f"/v1/connections/{CONNECTION}").json()
    assert conn["platform_name"] == "Lloyds Bank"
    assert conn["status"] == "Linked"
    assert conn["company_name"] == "Toft Stores"
    assert conn["metadata"]["currency"] == "GBP"
    assert conn["first_sync_at"] == "2026-11-20T09:20:00Z"
    assert conn["last_sync_at"] == "2026-11-21T02:30:11Z"
    assert conn["last_sync_status"] == "FetchError"
    assert conn["sync_active"] is False
    by_type = {d["data_type"]: d for d in conn["data_types"]}
    assert by_type["banking-accountBalances"]["phase"] == "failed"
    assert by_type["banking-transactions"]["last_successful_sync_at"] == "2026-11-21T02:30:11Z"
    assert set(by_type["banking-accounts"]) == {
        "data_type",
        "status",
        "phase",
        "last_sync_at",
        "last_successful_sync_at",
        "records_modified",
        "freshness",
        "expected_by",
        "threshold_seconds",
        "threshold_source",
    }


def test_connection_objects_have_exactly_the_documented_fields(client: TestClient, settings: Settings) -> None:
    deliver(settings, connection_event())
    (conn,) = client.get(f"/v1/companies/{COMPANY}/connections").json()["items"]
    assert set(conn) >= {
        "id",
        "company_id",
        "company_name",
        "platform_key",
        "platform_name",
        "source_type",
        "status",
        "created_at",
        "linked_at",
        "disconnected_at",
        "deleted_at",
        "first_sync_at",
        "last_sync_at",
        "last_successful_sync_at",
        "last_sync_status",
        "sync_active",
        "link_url",
        "metadata",
    }
    assert conn["sync_active"] is True


def test_sync_history_is_newest_first_and_filterable(client: TestClient, settings: Settings) -> None:
    deliver(
        settings,
        read_completed([("invoices", "Complete")], minutes=10),
        read_completed([("invoices", "FetchError"), ("bills", "Complete")], minutes=20),
    )
    items = client.get(f"/v1/connections/{CONNECTION}/syncs").json()["items"]
    assert [i["completed_at"] for i in items][0] == "2026-11-20T09:20:00Z"
    assert items[-1]["completed_at"] == "2026-11-20T09:10:00Z"
    failed = client.get(f"/v1/connections/{CONNECTION}/syncs?phase=failed").json()["items"]
    assert [(s["data_type"], s["status"]) for s in failed] == [("invoices", "FetchError")]
    assert failed[0]["issues"] == [{"type": "FetchError", "message": "failed"}]
    bills = client.get(f"/v1/connections/{CONNECTION}/syncs?data_type=bills").json()["items"]
    assert [s["phase"] for s in bills] == ["succeeded"]
    assert set(bills[0]) == {
        "id",
        "company_id",
        "connection_id",
        "data_type",
        "status",
        "phase",
        "requested_at",
        "completed_at",
        "records_modified",
        "issues",
        "source",
        "event_id",
        "typical_duration_seconds",
        "expected_completion_at",
        "delayed",
        "codat_status",
    }
    assert (bills[0]["delayed"], bills[0]["codat_status"]) == (False, None)


def test_pages_follow_the_cursor_without_gaps_or_repeats(client: TestClient, settings: Settings) -> None:
    deliver(settings, *(read_completed([(f"type{i}", "Complete")], minutes=i) for i in range(7)))
    seen: list[str] = []
    url = f"/v1/connections/{CONNECTION}/syncs?limit=3"
    while True:
        body = client.get(url).json()
        seen.extend(s["id"] for s in body["items"])
        if body["next_cursor"] is None:
            break
        url = f"/v1/connections/{CONNECTION}/syncs?limit=3&cursor={body['next_cursor']}"
    assert len(seen) == len(set(seen)) == 7


def test_active_syncs_are_listed_until_a_result_closes_them(client: TestClient, settings: Settings) -> None:
    deliver(settings, connection_event(minutes=0), connection_event(connection_id="c2", company_id="other"))
    active = client.get(f"/v1/syncs/active?company_id={COMPANY}").json()["items"]
    assert [(s["connection_id"], s["data_type"], s["phase"]) for s in active] == [(CONNECTION, "*", "active")]
    deliver(settings, read_completed(minutes=5))
    assert client.get(f"/v1/syncs/active?company_id={COMPANY}").json()["items"] == []
    assert len(client.get("/v1/syncs/active").json()["items"]) == 1


def test_stored_events_are_listed_filtered_and_shown_with_their_body(client: TestClient, settings: Settings) -> None:
    ids = deliver(settings, fixture("connection.connected"), fixture("legacy.DataSyncCompleted"))
    items = client.get("/v1/events?event_type=Data sync completed").json()["items"]
    assert [i["id"] for i in items] == [ids[1]]
    assert "body" not in items[0]
    one = client.get(f"/v1/events/{ids[0]}").json()
    assert one["body"] == fixture("connection.connected")
    assert one["outcome"] == "processed"
    assert one["generated_at"] == "2026-11-20T09:14:03Z"


def test_events_the_fold_cannot_use_are_stored_as_failed(client: TestClient, settings: Settings) -> None:
    body = {"id": "x", "eventType": "read.completed", "generatedDate": "2026-11-20T09:00:00Z", "payload": {}}
    (event_id,) = deliver(settings, body, legacy_alert("Rate Limit Reached", {}))[:1]
    failed = client.get("/v1/events?outcome=failed").json()["items"]
    assert [(e["id"], "dataTypes" in e["error"]) for e in failed] == [(event_id, True)]
    assert client.get("/v1/events?outcome=ignored").json()["items"][0]["event_type"] == "Rate Limit Reached"


@pytest.mark.parametrize(
    "path",
    ["/v1/connections/nope", "/v1/connections/nope/syncs", "/v1/companies/nope/connections", "/v1/events/nope"],
)
def test_unknown_ids_are_404_with_an_error_body(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "nope" in response.json()["detail"]


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "cursor=%%%", "phase=sleeping"])
def test_bad_parameters_are_400(client: TestClient, query: str) -> None:
    response = client.get(f"/v1/connections/{CONNECTION}/syncs?{query}")
    assert response.status_code in (400, 404)
    assert response.json()["error"] in ("invalid_parameter", "not_found")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["checks"]["database"] == "ok"
