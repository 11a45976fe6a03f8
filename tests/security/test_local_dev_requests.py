"""`synctrack dev` with authentication off, attacked by the web pages its developer opens.

A real `synctrack dev` on 127.0.0.1. The attacker is a page on another site: it can make the
developer's browser send simple requests (`text/plain` bodies, no preflight) to 127.0.0.1:8000, and
can rebind its own host name to 127.0.0.1 to read answers. Each attempt is sent here exactly as the
browser would send it, with its `Origin`, `Sec-Fetch-Site` and `Host` headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.builders import SECRET, connection_event, signed_request
from tests.support.services import ServiceProcess, free_port, wait_until_healthy

pytestmark = pytest.mark.e2e

EVIL = "https://attacker.example"
SUBSCRIPTION = json.dumps({"url": "http://127.0.0.1:9/exfiltrate", "event_types": ["*"]})


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = {
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_ADMIN_TOKEN_HASHES": "",
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{folder / 'ledger.db'}",
        "SYNCTRACK_SUBSCRIPTIONS_ALLOW_HTTP": "true",
        "SYNCTRACK_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
    }
    process = ServiceProcess(["dev", "--port", str(port)], env, folder, "dev")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        assert "AUTHENTICATION IS OFF" in process.output()
        yield base
    finally:
        process.stop()


def subscriptions(base: str) -> list[object]:
    items: list[object] = httpx.get(f"{base}/v1/subscriptions").json()["items"]
    return items


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL, "Content-Type": "text/plain"},
        {"Origin": EVIL, "Content-Type": "application/json"},
        {"Origin": "null", "Content-Type": "text/plain"},
        {"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
    ],
    ids=["text-plain-from-another-origin", "json-from-another-origin", "sandboxed-page", "no-origin-but-cross-site"],
)
def test_a_cross_site_page_cannot_create_a_subscription_that_ships_every_event_out(
    dev: str, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{dev}/v1/subscriptions", content=SUBSCRIPTION, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert subscriptions(dev) == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/tokens", json.dumps({"company_id": "c1"})),
        ("POST", "/v1/admin/dead-letters/purge", json.dumps({"all": True})),
        ("POST", "/v1/connections/c1/unlink", None),
        ("GET", "/v1/companies", None),
    ],
)
def test_a_cross_site_page_cannot_mint_tokens_purge_dead_letters_unlink_or_read(
    dev: str, method: str, path: str, body: str | None
) -> None:
    response = httpx.request(
        method, f"{dev}{path}", content=body, headers={"Origin": EVIL, "Content-Type": "text/plain"}
    )
    assert response.status_code == 403, response.text


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "10.0.0.5", "127.0.0.1.nip.io"])
def test_a_dns_rebinding_page_cannot_read_anything(dev: str, host: str) -> None:
    body, headers = signed_request(connection_event())
    assert httpx.post(f"{dev}/webhooks/codat", content=body, headers=headers).status_code == 202
    for path in ("/v1/companies", "/v1/events", "/v1/syncs/active", "/v1/stream", "/"):
        response = httpx.get(f"{dev}{path}", headers={"Host": host})
        assert response.status_code == 403, (path, response.text)
        assert "loopback" in response.json()["detail"]


def test_a_body_that_is_not_json_is_a_415_even_from_the_developer_themself(dev: str) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = httpx.post(f"{dev}/v1/subscriptions", content=SUBSCRIPTION, headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["error"] == "unsupported_media_type"
    assert subscriptions(dev) == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_the_developer_and_the_dashboard_on_a_loopback_name_are_served(dev: str, host: str) -> None:
    port = dev.rsplit(":", 1)[1]
    own = f"http://{host}:{port}"
    read = httpx.get(f"{dev}/v1/companies", headers={"Host": f"{host}:{port}", "Origin": own})
    assert read.status_code == 200, read.text
    same_origin = {"Host": f"{host}:{port}", "Origin": own, "Sec-Fetch-Site": "same-origin"}
    created = httpx.post(
        f"{dev}/v1/subscriptions", content=SUBSCRIPTION, headers={**same_origin, "Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    assert httpx.delete(f"{dev}/v1/subscriptions/{created.json()['id']}").status_code in (200, 204)
    assert httpx.get(f"{dev}/v1/companies").status_code == 200, "curl and scripts send no Origin"
