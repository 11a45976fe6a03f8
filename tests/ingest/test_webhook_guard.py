"""What guards the webhook route besides the signature (`service/ingest/receiver.py`,
`service/security/failure_budget.py`, `service/security/sources.py`): the source allow-list, the failure budget
per source, the body deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.security.failure_budget import FailureLimiter
from service.security.sources import SourceResolver, bucket_key, parse_networks
from tests.support.builders import OTHER_SECRET, connection_event, signed_request

CODAT_NETWORK = "192.0.2.0/24"
CODAT_ADDRESS = ("192.0.2.10", 40000)
STRANGER = ("198.51.100.7", 40000)
PROXY = ("127.0.0.1", 40000)


def post(client: TestClient, **kwargs: Any) -> httpx.Response:
    body, headers = signed_request(connection_event(), **kwargs)
    response: httpx.Response = client.post("/webhooks/codat", content=body, headers=headers)
    return response


@pytest.fixture
def guarded(embedded_settings: Settings) -> Settings:
    return embedded_settings.model_copy(
        update={"webhook_allowed_networks": [CODAT_NETWORK], "trusted_proxies": ["127.0.0.1/32"]}
    )


def client_at(settings: Settings, address: tuple[str, int]) -> TestClient:
    return TestClient(create_app(settings), client=address)


def test_an_allowed_network_delivers_and_any_other_source_is_a_403(guarded: Settings) -> None:
    with client_at(guarded, CODAT_ADDRESS) as codat:
        assert post(codat).status_code == 202
    with client_at(guarded, STRANGER) as stranger:
        refused = post(stranger)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden_network"


@pytest.mark.parametrize(
    ("peer", "forwarded", "status"),
    [
        (PROXY, "192.0.2.10", 202),
        (PROXY, "198.51.100.7", 403),
        (PROXY, "192.0.2.10, 198.51.100.7", 403),  # the left part is whatever the client claimed
        (PROXY, "198.51.100.7, 192.0.2.10", 202),
        (PROXY, "not-an-address", 403),
        (STRANGER, "192.0.2.10", 403),  # only a trusted proxy is believed
    ],
)
def test_x_forwarded_for_is_honoured_from_trusted_proxies_only(
    guarded: Settings, peer: tuple[str, int], forwarded: str, status: int
) -> None:
    body, headers = signed_request(connection_event())
    with client_at(guarded, peer) as client:
        answer = client.post("/webhooks/codat", content=body, headers={**headers, "X-Forwarded-For": forwarded})
    assert answer.status_code == status


@pytest.fixture
def limited(embedded_settings: Settings) -> Iterator[TestClient]:
    with client_at(embedded_settings.model_copy(update={"failure_limit_per_minute": 3}), STRANGER) as client:
        yield client


def test_a_source_of_bad_signatures_is_rate_limited_but_its_genuine_webhooks_still_pass(limited: TestClient) -> None:
    forged = [post(limited, secret=OTHER_SECRET).status_code for _ in range(4)]
    assert forged == [401, 401, 401, 429]
    again = post(limited, secret=OTHER_SECRET)
    assert again.json()["error"] == "rate_limited" and int(again.headers["retry-after"]) >= 1
    unsigned = limited.post("/webhooks/codat", content=b"{}", headers={"content-type": "application/json"})
    assert unsigned.status_code == 429
    genuine = post(limited)
    assert genuine.status_code == 202, genuine.text
    assert post(limited, timestamp=1_000_000).status_code == 429, "a replayed genuine message is not genuine"


def test_other_sources_keep_their_own_budget(embedded_settings: Settings) -> None:
    settings = embedded_settings.model_copy(update={"failure_limit_per_minute": 1})
    app = create_app(settings)
    with TestClient(app, client=STRANGER) as noisy, TestClient(app, client=CODAT_ADDRESS) as quiet:
        assert [post(noisy, secret=OTHER_SECRET).status_code for _ in range(2)] == [401, 429]
        assert post(quiet, secret=OTHER_SECRET).status_code == 401


def test_a_body_that_does_not_arrive_in_time_is_a_408(embedded_settings: Settings) -> None:
    app = create_app(embedded_settings.model_copy(update={"webhook_body_timeout_seconds": 0.3}))
    body, headers = signed_request(connection_event())
    sent: list[dict[str, Any]] = []

    async def trickle() -> dict[str, Any]:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": body[:10], "more_body": True}
        await asyncio.sleep(5)
        return {"type": "http.request", "body": body[10:], "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/codat",
        "raw_path": b"/webhooks/codat",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": STRANGER,
        "server": ("testserver", 80),
        "app": app,
    }
    with TestClient(app):  # runs the lifespan

        async def call() -> None:
            await asyncio.wait_for(app(scope, trickle, send), timeout=3)  # type: ignore[arg-type]

        asyncio.run(call())
    start = next(m for m in sent if m.get("type") == "http.response.start")
    body_part = next(m for m in sent if m.get("type") == "http.response.body")
    assert start["status"] == 408
    assert json.loads(body_part["body"])["error"] == "request_timeout"


def test_the_failure_budget_refills_over_time() -> None:
    now = [0.0]
    limiter = FailureLimiter(6, clock=lambda: now[0])
    for _ in range(6):
        assert limiter.retry_after("s") is None
        limiter.charge("s")
    assert limiter.retry_after("s") == 10, "one failure comes back every 10 s at 6 a minute"
    now[0] = 10.0
    assert limiter.retry_after("s") is None


def test_the_failure_budget_remembers_a_bounded_number_of_sources() -> None:
    limiter = FailureLimiter(1, max_sources=100)
    for n in range(10_000):
        limiter.charge(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter.buckets) == 100
    assert limiter.retry_after("10.0.39.15") is not None, "the most recent sources are still limited"


def test_ipv6_sources_share_a_budget_per_64_and_mapped_ipv4_is_ipv4() -> None:
    assert bucket_key("2001:db8::1") == bucket_key("2001:db8::ffff") == "2001:db8::/64"
    resolver = SourceResolver(parse_networks(["::ffff:127.0.0.1/128"], "x"))
    assert resolver.source({"client": ("::ffff:192.0.2.1", 1)}) == "192.0.2.1"


def test_a_malformed_network_setting_names_itself() -> None:
    with pytest.raises(ValueError, match="SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS"):
        parse_networks(["10.0.0.0/33"], "SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS")
