"""Crafted query parameters and path ids, sent over HTTP as an attacker would: a 400 or 404 that says why,
never a 5xx — on SQLite and on PostgreSQL (which refuses a NUL in any string it is given)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS
from tests.support.builders import connection_event, read_completed
from workers.ingest.handle import handle_webhook
from workers.runtime.db import make_engine, upgrade

COMPANY, CONNECTION = str(uuid.uuid4()), str(uuid.uuid4())
LISTS = [
    "/v1/companies",
    f"/v1/companies/{COMPANY}/connections",
    "/v1/connections",
    f"/v1/connections/{CONNECTION}/syncs",
    "/v1/syncs/active",
    "/v1/events",
    "/v1/audit",
    "/v1/subscriptions",
    "/v1/admin/replays",
    "/v1/admin/dead-letters",
]


def crafted(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = {
    "elements-of-the-wrong-type": crafted([["x"], {"y": 1}]),
    "huge-integers": crafted([10**30, 10**30]),
    "null": crafted([None, None]),
    "one-null": crafted([None]),
    "booleans": crafted([True, False]),
    "floats": crafted([1.5, 2.5]),
    "a-nul-in-a-string": crafted(["2026-01-01T00:00:00Z", "a\x00b"]),
    "nul-alone": crafted(["a\x00b"]),
    "a-lone-surrogate": crafted(["\ud800"]),
    "a-lone-surrogate-after-a-time": crafted(["2024-01-01T00:00:00Z", "\ud800"]),
    "time-off-the-calendar": crafted(["9999-12-31T23:59:59-23:59", "x"]),
    "negative": crafted([-1]),
    "deeply-nested": base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(),
    "not-base64": "%%%",
    "not-json": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "nan": base64.urlsafe_b64encode(b"[NaN]").decode(),
    "very-long": "A" * 20_000,
}
BAD_LIMITS = ["²", "٣", "1e3", "-1", "0", "501", " 5", "", "5.0", "0x10", "9" * 5000]


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    import fakeredis

    import workers.runtime.broker as broker

    broker._embedded_server = fakeredis.FakeServer()
    settings = Settings(
        embedded=True,
        database_url=database_url,
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        _env_file=None,
        **AUTH_SETTINGS,  # type: ignore[arg-type]
    )
    upgrade(database_url)
    engine = make_engine(database_url)
    for body in (
        connection_event(company_id=COMPANY, connection_id=CONNECTION),
        read_completed([("invoices", "Fetching")], company_id=COMPANY, connection_id=CONNECTION),
    ):
        handle_webhook(engine, None, f"msg_{uuid.uuid4().hex}", json.dumps(body), datetime.now(UTC).isoformat())
    engine.dispose()
    with TestClient(create_app(settings), headers=ADMIN_HEADERS, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_crafted_cursor_or_limit_is_a_400_on_every_list(client: TestClient) -> None:
    failures = []
    for path in LISTS:
        for name, cursor in BAD_CURSORS.items():
            response = client.get(path, params={"cursor": cursor})
            if response.status_code != 400 or response.json()["error"] != "invalid_parameter":
                failures.append((path, f"cursor {name}", response.status_code, response.text[:100]))
        for limit in BAD_LIMITS:
            response = client.get(path, params={"limit": limit})
            if response.status_code != 400 or response.json()["error"] != "invalid_parameter":
                failures.append((path, f"limit {limit[:10]!r}", response.status_code, response.text[:100]))
        assert client.get(path, params={"limit": "500"}).status_code == 200, path
    assert failures == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/companies/a%00b/connections",
        "/v1/connections/a%00b",
        "/v1/connections/a%00b/syncs",
        "/v1/events/a%00b",
        "/v1/subscriptions/a%00b",
        "/v1/subscriptions/a%00b/deliveries",
        "/v1/subscriptions/a%00b/deliveries/d%00e",
        "/v1/admin/replays/a%00b",
        "/v1/admin/dead-letters/a%00b",
        "/v1/companies/a%2Cb/connections",
        "/v1/connections/%20",
    ],
)
def test_a_path_id_no_resource_can_have_is_a_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/connections/a%00b/unlink"),
        ("DELETE", "/v1/connections/a%00b"),
        ("POST", "/v1/companies/a%00b/refresh"),
        ("POST", f"/v1/companies/{COMPANY}/refresh/inv%00oices"),
    ],
)
def test_an_action_on_an_id_with_a_nul_is_a_404_before_anything_is_looked_up(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "query",
    [
        {"event_type": "a\x00b"},
        {"company_id": "a\x00b"},
        {"connection_id": "\x00"},
        {"outcome": "processed\x00"},
        {"data_type": "invoices\x00"},
        {"a\x00b": "x"},
    ],
)
def test_a_query_parameter_with_a_nul_is_a_400(client: TestClient, query: dict[str, str]) -> None:
    for path in ("/v1/events", "/v1/syncs/active", f"/v1/connections/{CONNECTION}/syncs", "/v1/audit"):
        response = client.get(path, params=query)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "invalid_parameter"


@pytest.mark.parametrize(
    "query",
    [{"since": "2026-01-01T00:00:00\x00"}, {"since": "9999-12-31T23:59:59-23:59"}, {"until": "0001-01-01T00:00+23:59"}],
)
def test_a_time_off_the_calendar_is_a_400(client: TestClient, query: dict[str, str]) -> None:
    response = client.get("/v1/events", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_parameter"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/subscriptions", {"url": "https://example.com/hook", "event_types": ["*"], "description": "a\x00b"}),
        ("/v1/subscriptions", {"url": "https://example.com/hook", "event_types": ["*"], "company_ids": ["a\x00"]}),
        ("/v1/admin/replay", {"event_id": ["a\x00b"]}),
        ("/v1/admin/replay", {"company_id": "a\x00b", "dry_run": True}),
        ("/v1/admin/dead-letters/purge", {"ids": ["a\x00b"]}),
        ("/v1/admin/replay", {"company_id": "\ud800", "dry_run": True}),
        ("/v1/admin/imports", {"company_id": ["\udfff"]}),
        ("/v1/subscriptions", {"url": "https://example.com/hook", "event_types": ["*"], "\ud800": "x"}),
    ],
)
def test_a_body_string_with_a_nul_or_a_lone_surrogate_is_a_400(
    client: TestClient, path: str, body: dict[str, object]
) -> None:
    response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_parameter"
