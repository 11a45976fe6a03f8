"""Every kind of error answer, byte for byte: one body shape, whichever layer refuses the request.

The auth middleware, the header limits, the webhook guard, the receiver, the route handlers and the
router itself all answer ``{"error": <code>, "detail": <sentence>}``; these are the exact bytes, status
codes and headers clients see.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS


@pytest.fixture
def client(embedded_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(embedded_settings), headers=ADMIN_HEADERS) as test_client:
        yield test_client


def body_of(response: object) -> bytes:
    content: bytes = response.content  # type: ignore[attr-defined]
    return content


def test_a_path_no_route_has_is_a_404_naming_method_and_path(client: TestClient) -> None:
    response = client.get("/v1/nowhere")
    assert response.status_code == 404
    assert body_of(response) == b'{"error":"not_found","detail":"no route GET /v1/nowhere"}'
    assert response.headers["content-type"] == "application/json"


def test_a_method_a_route_does_not_take_is_a_405_with_the_allowed_ones(client: TestClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert body_of(response) == b'{"error":"invalid_parameter","detail":"Method Not Allowed"}'
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_a_request_without_a_token_is_a_401_with_the_bearer_challenge(embedded_settings: Settings) -> None:
    with TestClient(create_app(embedded_settings)) as anonymous:
        response = anonymous.get("/v1/companies")
    assert response.status_code == 401
    assert body_of(response) == (
        b'{"error":"unauthorized","detail":"this route needs an Authorization: Bearer <token> header"}'
    )
    assert response.headers["www-authenticate"] == 'Bearer realm="synctrack"'


def test_an_unknown_replay_job_is_a_404_naming_it(client: TestClient) -> None:
    response = client.get("/v1/admin/replays/rpl_nope")
    assert response.status_code == 404
    assert body_of(response) == b'{"error":"not_found","detail":"no replay job with id \'rpl_nope\'"}'
    for refused in (client.post("/v1/admin/replays/rpl_nope/cancel"), client.post("/v1/admin/replays/rpl_nope/resume")):
        assert (refused.status_code, body_of(refused)) == (404, body_of(response))


def test_a_subscription_url_outbound_deliveries_may_not_use_is_a_400(client: TestClient) -> None:
    response = client.post("/v1/subscriptions", json={"url": "ftp://example.com/hook"})
    assert response.status_code == 400
    assert body_of(response) == b'{"error":"invalid_url","detail":"url must use https"}'


def test_too_many_header_bytes_are_a_431_before_authentication(embedded_settings: Settings) -> None:
    settings = embedded_settings.model_copy(update={"max_header_bytes": 2048})
    with TestClient(create_app(settings)) as anonymous:
        response = anonymous.get("/v1/companies", headers={"x-padding": "a" * 4096})
    assert response.status_code == 431
    assert body_of(response) == (
        b'{"error":"headers_too_large","detail":"at most 100 headers of 2048 bytes in all are accepted"}'
    )


def test_a_webhook_from_outside_the_allowed_networks_is_a_403(embedded_settings: Settings) -> None:
    settings = embedded_settings.model_copy(update={"webhook_allowed_networks": ["192.0.2.0/24"]})
    with TestClient(create_app(settings), client=("198.51.100.7", 4000)) as stranger:
        response = stranger.post("/webhooks/codat", content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 403
    assert body_of(response) == (
        b'{"error":"forbidden_network","detail":"this source address may not deliver webhooks'
        b' (SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS)"}'
    )


def test_a_webhook_that_is_not_json_is_a_415(client: TestClient) -> None:
    response = client.post("/webhooks/codat", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert body_of(response) == (
        b'{"error":"unsupported_media_type","detail":"webhooks must be sent as application/json"}'
    )


def test_the_stream_before_the_change_feed_is_reached_is_a_503_to_retry(embedded_settings: Settings) -> None:
    not_started = TestClient(create_app(embedded_settings), headers=ADMIN_HEADERS)  # no lifespan: no feed
    response = not_started.get("/v1/stream")
    assert response.status_code == 503
    assert body_of(response) == b'{"error":"stream_unavailable","detail":"the change feed (Redis) is not reachable"}'
    assert response.headers["retry-after"] == "1"
