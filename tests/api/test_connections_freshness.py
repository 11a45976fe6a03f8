"""Freshness on the JSON API: Connection fields, data types, and `GET /v1/connections` across companies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from redis.asyncio import Redis as AsyncRedis
from sqlmodel import Session
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from tests.support.auth import ADMIN_HEADERS, bearer, company_token
from tests.support.builders import BASE_TIME, connection_event, iso, read_completed
from tests.support.ledger_fill import deliver
from tests.support.services import NoRedis
from workers.ledger.schedules import record_schedules
from workers.runtime.db import make_engine, upgrade

NOW = datetime.now(UTC)
OTHER = "0f6b7d3e-1c2a-4b5d-8e9f-a0b1c2d3e4f5"


def ago(hours: float) -> float:
    """The builders' `minutes` (after their base time) of a moment `hours` before now."""
    return ((NOW - timedelta(hours=hours)) - BASE_TIME).total_seconds() / 60


@pytest.fixture
def settings(database_url: str, embedded_settings: Settings) -> Settings:
    upgrade(database_url)
    return embedded_settings.model_copy(update={"database_url": database_url, "embedded": False})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    services(app).redis = cast(AsyncRedis, NoRedis())
    deliver(
        settings,
        # COMPANY (the builders' default): one fresh, one overdue connection
        connection_event(connection_id="a-fresh", minutes=ago(80)),
        read_completed([("invoices", "Complete")], connection_id="a-fresh", minutes=ago(1)),
        connection_event(connection_id="a-late", minutes=ago(80), platform="Xero"),
        read_completed([("invoices", "Complete"), ("bills", "Complete")], connection_id="a-late", minutes=ago(72)),
        read_completed([("bills", "Complete"), ("invoices", "FetchError")], connection_id="a-late", minutes=ago(2)),
        # OTHER: paused, pending, never
        connection_event(connection_id="b-paused", company_id=OTHER, minutes=ago(80)),
        connection_event("connection.disconnected", connection_id="b-paused", company_id=OTHER, minutes=ago(70)),
        connection_event(connection_id="b-pending", company_id=OTHER, minutes=ago(2)),
        connection_event(connection_id="b-never", company_id=OTHER, minutes=ago(120)),
        read_completed([("invoices", "AuthError")], connection_id="b-never", company_id=OTHER, minutes=ago(110)),
    )
    with TestClient(app, headers=ADMIN_HEADERS) as test_client:
        yield test_client


def listed(client: TestClient, query: str = "", **headers: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/connections{query}", headers=headers or None)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_every_connection_object_says_how_fresh_it_is(client: TestClient) -> None:
    by_id = {c["id"]: c for c in listed(client)}
    assert {cid: c["freshness"] for cid, c in by_id.items()} == {
        "a-fresh": "fresh",
        "a-late": "overdue",
        "b-paused": "paused",
        "b-pending": "pending",
        "b-never": "never",
    }
    assert by_id["a-late"]["overdue_data_types"] == ["invoices"]
    assert by_id["a-fresh"]["overdue_data_types"] == []
    assert by_id["b-paused"]["expected_by"] is None and by_id["b-never"]["expected_by"] is None
    fresh_by = datetime.fromisoformat(by_id["a-fresh"]["expected_by"].replace("Z", "+00:00"))
    assert abs(fresh_by - (NOW + timedelta(hours=23))) < timedelta(minutes=1)


def test_the_company_list_and_the_detail_carry_the_same_fields(client: TestClient) -> None:
    from tests.support.builders import COMPANY

    (late,) = [c for c in client.get(f"/v1/companies/{COMPANY}/connections").json()["items"] if c["id"] == "a-late"]
    assert late["freshness"] == "overdue"
    detail = client.get("/v1/connections/a-late").json()
    assert detail["freshness"] == "overdue" and detail["overdue_data_types"] == ["invoices"]
    types = {d["data_type"]: d for d in detail["data_types"]}
    assert types["invoices"]["freshness"] == "overdue"
    assert types["bills"]["freshness"] == "fresh"
    assert detail["expected_by"] == types["invoices"]["expected_by"]  # the earliest deadline
    assert types["invoices"]["expected_by"] == iso(at_hours_ago(72) + timedelta(days=1))


def at_hours_ago(hours: float) -> datetime:
    return BASE_TIME + timedelta(minutes=ago(hours))


def test_connections_can_be_filtered_by_freshness_company_and_source_type(client: TestClient) -> None:
    assert [c["id"] for c in listed(client, "?freshness=overdue")] == ["a-late"]
    assert [c["id"] for c in listed(client, "?freshness=never,pending")] == ["b-never", "b-pending"]
    assert [c["id"] for c in listed(client, f"?company_id={OTHER}&freshness=paused")] == ["b-paused"]
    assert listed(client, "?source_type=Accounting") == []
    assert len(listed(client, "?source_type=Banking")) == 5


def test_the_list_pages_with_a_cursor_while_filtering(client: TestClient) -> None:
    seen, cursor = [], None
    while True:
        query = "?freshness=fresh,pending,never&limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/connections{query}").json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a-fresh", "b-never", "b-pending"]


def test_an_unknown_freshness_is_a_400_saying_which_are_known(client: TestClient) -> None:
    response = client.get("/v1/connections?freshness=stale")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_parameter"
    assert "fresh, overdue, pending, never, paused" in response.json()["detail"]


def test_a_company_token_lists_only_its_own_company(client: TestClient) -> None:
    own = bearer(company_token(OTHER))
    assert [c["id"] for c in listed(client, **own)] == ["b-never", "b-paused", "b-pending"]
    assert [c["id"] for c in listed(client, "?freshness=overdue", **own)] == []
    from tests.support.builders import COMPANY

    response = client.get(f"/v1/connections?company_id={COMPANY}", headers=own)
    assert response.status_code == 404
    prefix = client.get(f"/v1/connections?company_id={OTHER[:8]}", headers=own)
    assert prefix.status_code == 404, "confinement is by the exact company id"


def record_weekly_schedules(settings: Settings) -> None:
    """Codat's settings as a deployment with an API key would have read them: weekly for every data type."""
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session, session.begin():
            record_schedules(session, None, {"invoices": 168, "bills": 168}, NOW)
    finally:
        engine.dispose()


def test_without_an_api_key_each_data_type_keeps_the_thresholds_of_the_settings(
    client: TestClient, settings: Settings
) -> None:
    record_weekly_schedules(settings)
    types = {d["data_type"]: d for d in client.get("/v1/connections/a-late").json()["data_types"]}
    assert (types["invoices"]["threshold_seconds"], types["invoices"]["threshold_source"]) == (86_400, "default")
    assert types["invoices"]["freshness"] == "overdue"

    keyed = create_app(settings.model_copy(update={"codat_api_key": "key"}))
    services(keyed).redis = cast(AsyncRedis, NoRedis())
    with TestClient(keyed, headers=ADMIN_HEADERS) as with_key:
        types = {d["data_type"]: d for d in with_key.get("/v1/connections/a-late").json()["data_types"]}
    assert (types["invoices"]["threshold_seconds"], types["invoices"]["threshold_source"]) == (
        168 * 1.5 * 3600,
        "client_schedule",
    )
    assert types["invoices"]["freshness"] == "fresh"
