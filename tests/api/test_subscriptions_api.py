"""`/v1/subscriptions`: the HTTP contract, in-process (SQLite, in-process Redis, a real local receiver)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS, bearer, company_token
from tests.support.subscription_support import fast_settings, publish_change, queued_ids
from tests.support.webhook_receiver import WebhookReceiver
from workers.runtime.broker import sync_redis


@pytest.fixture
def settings(embedded_settings: Settings) -> Settings:
    return fast_settings(embedded_settings)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def create(client: TestClient, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/subscriptions", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def queued(settings: Settings) -> list[str]:
    return queued_ids(sync_redis(settings), settings.redis_namespace)


def test_creating_a_subscription_shows_its_secret_once(client: TestClient) -> None:
    created = create(
        client,
        "http://127.0.0.1:9/hook",
        event_types=["sync.completed", "connection.updated"],
        company_ids=["c1"],
        description="credit decisions",
    )

    assert created["secret"].startswith("whsec_")
    assert created["id"].startswith("sub_")
    assert created["event_types"] == ["connection.updated", "sync.completed"]
    assert (created["company_ids"], created["enabled"], created["description"]) == (["c1"], True, "credit decisions")
    fetched = client.get(f"/v1/subscriptions/{created['id']}").json()
    listed = client.get("/v1/subscriptions").json()["items"]
    assert "secret" not in fetched and all("secret" not in item for item in listed)
    assert fetched == {k: v for k, v in created.items() if k != "secret"}
    assert [item["id"] for item in listed] == [created["id"]]


def test_subscriptions_are_for_admins_only(client: TestClient) -> None:
    created = create(client, "http://127.0.0.1:9/hook")
    company = bearer(company_token("c1", ["read", "refresh", "disconnect", "delete"]))

    assert client.get("/v1/subscriptions", headers={"Authorization": ""}).status_code == 401
    assert client.get("/v1/subscriptions", headers=company).status_code == 403
    assert client.post(f"/v1/subscriptions/{created['id']}/rotate-secret", headers=company).status_code == 403


def test_event_types_default_to_everything_and_star_absorbs_the_rest(client: TestClient) -> None:
    assert create(client, "http://127.0.0.1:9/a")["event_types"] == ["*"]
    assert create(client, "http://127.0.0.1:9/b", event_types=["*", "sync.failed"])["event_types"] == ["*"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"url": "http://127.0.0.1:9/x", "event_types": ["sync.finished"]}, "invalid_parameter"),
        ({"url": "http://127.0.0.1:9/x", "event_types": []}, "invalid_parameter"),
        ({"url": "http://127.0.0.1:9/x", "company_ids": []}, "invalid_parameter"),
        ({"url": "http://127.0.0.1:9/x", "secret": "whsec_mine"}, "invalid_parameter"),
        ({"event_types": ["*"]}, "invalid_parameter"),
        ({"url": "ftp://example.com/x"}, "invalid_url"),
    ],
)
def test_an_invalid_subscription_is_refused_with_the_reason(
    client: TestClient, body: dict[str, Any], error: str
) -> None:
    response = client.post("/v1/subscriptions", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert client.get("/v1/subscriptions").json()["items"] == []


def test_a_body_that_is_not_json_is_refused(client: TestClient) -> None:
    response = client.post("/v1/subscriptions", content=b"{nope", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_json")


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://169.254.169.254/latest"],
)
def test_without_the_development_settings_only_public_https_urls_are_accepted(
    embedded_settings: Settings, url: str
) -> None:
    strict_settings = embedded_settings.model_copy(update=AUTH_SETTINGS)
    with TestClient(create_app(strict_settings), headers=ADMIN_HEADERS) as strict:
        response = strict.post("/v1/subscriptions", json={"url": url})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_url")


@pytest.mark.parametrize(
    "address",
    ["::ffff:0:127.0.0.1", "100::1", "2001:db8::1", "3fff::1", "5f00::1", "64:ff9b:1::a00:1", "2002:a00:1::1"],
)
def test_reserved_ipv6_destinations_are_refused(embedded_settings: Settings, address: str) -> None:
    strict_settings = embedded_settings.model_copy(update=AUTH_SETTINGS)
    with TestClient(create_app(strict_settings), headers=ADMIN_HEADERS) as strict:
        response = strict.post("/v1/subscriptions", json={"url": f"https://[{address}]/"})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_url")
        assert strict.get("/v1/subscriptions").json()["items"] == []


def test_a_refused_name_is_not_told_what_it_resolves_to(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def internal(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.partner.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", internal)
    strict_settings = embedded_settings.model_copy(update=AUTH_SETTINGS)
    with TestClient(create_app(strict_settings), headers=ADMIN_HEADERS) as strict:
        response = strict.post("/v1/subscriptions", json={"url": "https://hooks.partner.example/x"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_url")
    assert response.json()["detail"] == "host 'hooks.partner.example' is not allowed: not a public address"


def test_patch_changes_only_the_fields_given(client: TestClient) -> None:
    created = create(client, "http://127.0.0.1:9/a", company_ids=["c1"], description="first")

    patched = client.patch(f"/v1/subscriptions/{created['id']}", json={"event_types": ["sync.failed"]}).json()
    cleared = client.patch(f"/v1/subscriptions/{created['id']}", json={"company_ids": None}).json()

    assert (patched["event_types"], patched["company_ids"], patched["description"]) == (
        ["sync.failed"],
        ["c1"],
        "first",
    )
    assert cleared["company_ids"] is None and cleared["event_types"] == ["sync.failed"]
    bad = client.patch(f"/v1/subscriptions/{created['id']}", json={"url": "ftp://x"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_url")


def test_disabling_by_hand_and_enabling_again(client: TestClient) -> None:
    created = create(client, "http://127.0.0.1:9/a")

    off = client.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": False}).json()
    on = client.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": True}).json()

    assert (off["enabled"], off["disabled_reason"]) == (False, "manual") and off["disabled_at"]
    assert (on["enabled"], on["disabled_reason"], on["disabled_at"], on["failing_since"]) == (True, None, None, None)
    assert client.get("/v1/subscriptions?enabled=false").json()["items"] == []
    assert [s["id"] for s in client.get("/v1/subscriptions?enabled=true").json()["items"]] == [created["id"]]
    assert client.get("/v1/subscriptions?enabled=maybe").status_code == 400


def test_deleting_a_subscription_removes_it_and_its_deliveries(client: TestClient, receiver: WebhookReceiver) -> None:
    created = create(client, receiver.url("/a"))
    client.post(f"/v1/subscriptions/{created['id']}/test")

    assert client.delete(f"/v1/subscriptions/{created['id']}").status_code == 204

    assert client.get(f"/v1/subscriptions/{created['id']}").status_code == 404
    assert client.get(f"/v1/subscriptions/{created['id']}/deliveries").status_code == 404
    assert client.delete(f"/v1/subscriptions/{created['id']}").json()["error"] == "not_found"


def test_the_test_endpoint_sends_a_signed_ping_and_answers_with_its_delivery(
    client: TestClient, receiver: WebhookReceiver
) -> None:
    created = create(client, receiver.url("/ping"), event_types=["sync.failed"])
    receiver.expect("/ping", [created["secret"]])

    delivery = client.post(f"/v1/subscriptions/{created['id']}/test").json()

    (got,) = receiver.at("/ping")
    assert got.verified == {created["secret"]: True}
    assert got.body["type"] == "ping" and got.body["data"]["subscription_id"] == created["id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_response_code"]) == ("delivered", 1, 204)
    assert delivery["id"] == got.webhook_id
    (logged,) = client.get(f"/v1/subscriptions/{created['id']}/deliveries").json()["items"]
    assert logged == delivery
    detail = client.get(f"/v1/subscriptions/{created['id']}/deliveries/{delivery['id']}").json()
    assert detail["body"] == got.body


def test_rotation_signs_with_both_secrets_during_the_overlap(client: TestClient, receiver: WebhookReceiver) -> None:
    created = create(client, receiver.url("/rotate"))
    rotated = client.post(f"/v1/subscriptions/{created['id']}/rotate-secret").json()
    receiver.expect("/rotate", [created["secret"], rotated["secret"]])

    client.post(f"/v1/subscriptions/{created['id']}/test")

    assert rotated["secret"] != created["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    (got,) = receiver.at("/rotate")
    assert got.verified == {created["secret"]: True, rotated["secret"]: True}
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def test_a_failed_delivery_can_be_retried_by_hand(
    client: TestClient, receiver: WebhookReceiver, settings: Settings
) -> None:
    created = create(client, receiver.url("/retry"))
    receiver.expect("/retry", [created["secret"]], script=[500])
    failed = client.post(f"/v1/subscriptions/{created['id']}/test").json()
    assert (failed["status"], failed["last_response_code"], failed["next_attempt_at"] is not None) == (
        "pending",
        500,
        True,
    )

    retried = client.post(f"/v1/subscriptions/{created['id']}/deliveries/{failed['id']}/retry")

    assert retried.status_code == 202
    assert retried.json()["status"] == "pending"
    assert queued(settings) == [failed["id"]]


def test_a_disabled_subscription_cannot_be_tested_retried_or_replayed(client: TestClient) -> None:
    created = create(client, "http://127.0.0.1:9/off")
    client.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": False})

    test = client.post(f"/v1/subscriptions/{created['id']}/test")
    replay = client.post(f"/v1/subscriptions/{created['id']}/replay", json={"since": "2026-01-01T00:00:00Z"})

    assert (test.status_code, test.json()["error"]) == (409, "subscription_disabled")
    assert (replay.status_code, replay.json()["error"]) == (409, "subscription_disabled")


def test_replay_queues_the_matching_changes_of_a_range(client: TestClient, settings: Settings) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    redis = sync_redis(settings)
    publish_change(redis, settings.redis_namespace, "sync.completed")
    publish_change(redis, settings.redis_namespace, "sync.failed")
    created = create(client, "http://127.0.0.1:9/r", event_types=["sync.completed"])

    response = client.post(f"/v1/subscriptions/{created['id']}/replay", json={"since": since.isoformat()})

    assert response.status_code == 202
    assert response.json() | {"oldest_available": None} == {
        "matched": 1,
        "queued": 1,
        "already_delivered": 0,
        "oldest_available": None,
        "truncated": False,
    }
    assert len(queued(settings)) == 1
    bad = client.post(f"/v1/subscriptions/{created['id']}/replay", json={"since": "2030-01-01T00:00:00Z"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_parameter")


def test_unknown_ids_are_404(client: TestClient) -> None:
    created = create(client, "http://127.0.0.1:9/a")
    for method, path in [
        ("GET", "/v1/subscriptions/sub_nope"),
        ("PATCH", "/v1/subscriptions/sub_nope"),
        ("POST", "/v1/subscriptions/sub_nope/rotate-secret"),
        ("POST", "/v1/subscriptions/sub_nope/test"),
        ("GET", f"/v1/subscriptions/{created['id']}/deliveries/msg_nope"),
        ("POST", f"/v1/subscriptions/{created['id']}/deliveries/msg_nope/retry"),
    ]:
        response = client.request(method, path, json={} if method == "PATCH" else None)
        assert (response.status_code, response.json()["error"]) == (404, "not_found"), (method, path)


def test_the_delivery_log_pages_and_filters(client: TestClient, receiver: WebhookReceiver) -> None:
    created = create(client, receiver.url("/log"))
    receiver.expect("/log", [created["secret"]], script=[500])
    for _ in range(3):
        client.post(f"/v1/subscriptions/{created['id']}/test")
    base = f"/v1/subscriptions/{created['id']}/deliveries"

    first = client.get(f"{base}?limit=2").json()
    second = client.get(f"{base}?limit=2&cursor={first['next_cursor']}").json()
    pending = client.get(f"{base}?status=pending").json()["items"]

    assert len(first["items"]) == 2 and len(second["items"]) == 1 and second["next_cursor"] is None
    assert len({d["id"] for d in first["items"] + second["items"]}) == 3
    assert [d["last_response_code"] for d in pending] == [500]
    assert client.get(f"{base}?status=lost").status_code == 400
