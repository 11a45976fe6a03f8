"""The JSON API against a caller probing its edges, over real processes: `synctrack web` and `synctrack worker` on
the real Redis, once on SQLite and once on PostgreSQL, webhooks signed and sent through the receiver.

* A stored webhook of no company (a client-wide rate-limit notice) is the admins' alone: a company token asking
  for it by id gets the 404 an unknown id gets.
* A string no database stores (a lone surrogate, which JSON's `\\u` escapes can spell) in a cursor, a body or
  any other value is a 400 saying so, never a 5xx.
* No `/v1/*` answer may be cached (`Cache-Control: no-store`): the token a mint answers with, data, errors of
  every layer, the stream.
* An admin's JSON body is read up to `SYNCTRACK_MAX_ADMIN_BODY_BYTES` and no further: 413 `payload_too_large`,
  declared or not, answered before the rest of the body is even sent.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV, bearer, company_token
from tests.support.builders import SECRET, connection_event, fixture, signed_request
from tests.support.services import (
    REDIS_URL,
    free_port,
    fresh_postgres_database,
    postgres_unavailable,
    redis_unavailable,
    run_db_upgrade,
    start_web_and_worker,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

COMPANY, CONNECTION = f"co-{uuid.uuid4().hex[:8]}", f"conn-{uuid.uuid4().hex[:8]}"
MAX_ADMIN_BODY_BYTES = 100_000


@dataclass
class Deployment:
    base: str
    company_less_event: str
    """The id of a stored webhook that names no company (`client.rateLimit.reached`)."""

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", params=params, headers=headers or ADMIN_HEADERS, timeout=10)


def deliver(base: str, body: dict[str, Any]) -> None:
    raw, headers = signed_request(body)
    response = httpx.post(f"{base}/webhooks/codat", content=raw, headers=headers, timeout=10)
    assert response.status_code == 202, response.text


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One web and one worker process with a company, its connection and a company-less webhook stored."""
    if reason := redis_unavailable() or (request.param == "postgres" and postgres_unavailable()):
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    namespace = f"synctrack-test-{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        if request.param == "postgres":
            database = stack.enter_context(fresh_postgres_database())
        else:
            database = f"sqlite:///{tmp / 'ledger.db'}"
        env = {
            **AUTH_ENV,
            "SYNCTRACK_DATABASE_URL": database,
            "SYNCTRACK_REDIS_URL": REDIS_URL,
            "SYNCTRACK_REDIS_NAMESPACE": namespace,
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_MAX_ADMIN_BODY_BYTES": str(MAX_ADMIN_BODY_BYTES),
        }
        upgraded = run_db_upgrade(env, tmp, timeout=120)
        assert upgraded.returncode == 0, upgraded.stderr
        port = free_port()
        start_web_and_worker(stack, env, tmp, port, processes=1, threads=2)
        base = f"http://127.0.0.1:{port}"
        deliver(base, connection_event(company_id=COMPANY, connection_id=CONNECTION))
        deliver(base, fixture("client.rateLimit.reached") | {"id": str(uuid.uuid4())})

        def stored() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = httpx.get(f"{base}/v1/events", headers=ADMIN_HEADERS).json()["items"]
            return items if len(items) == 2 else []

        events = wait_for(stored, timeout=30, message="both webhooks stored")
        (company_less,) = [event["id"] for event in events if event["company_id"] is None]
        yield Deployment(base, company_less)
        keys = list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{namespace}:*"))
        if keys:
            redis.Redis.from_url(REDIS_URL).delete(*keys)


def test_a_company_token_reading_a_company_less_event_gets_the_404_of_an_unknown_id(deployment: Deployment) -> None:
    token = bearer(company_token(COMPANY))
    unknown = deployment.get("/v1/events/msg_no-such-event", token)

    answer = deployment.get(f"/v1/events/{deployment.company_less_event}", token)

    assert unknown.status_code == answer.status_code == 404
    assert answer.json() == {"error": "not_found", "detail": f"no event with id {deployment.company_less_event!r}"}
    assert unknown.json()["detail"] == "no event with id 'msg_no-such-event'"
    assert deployment.company_less_event not in str(deployment.get("/v1/events", token).json())
    admin = deployment.get(f"/v1/events/{deployment.company_less_event}")
    assert admin.status_code == 200 and admin.json()["body"]["eventType"] == "client.rateLimit.reached"


def cursor(*values: object) -> str:
    """A cursor as this API encodes one, holding `values`."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


ONE_PART = ["/v1/companies", f"/v1/companies/{COMPANY}/connections", "/v1/connections"]
TWO_PART = ["/v1/events", "/v1/syncs/active", f"/v1/connections/{CONNECTION}/syncs", "/v1/subscriptions"]
ADMIN_ONLY = {"/v1/companies", "/v1/subscriptions"}


def test_a_lone_surrogate_in_a_cursor_is_a_400_on_every_list_for_admins_and_company_tokens(
    deployment: Deployment,
) -> None:
    callers = {"admin": ADMIN_HEADERS, "company": bearer(company_token(COMPANY))}
    answers = {}
    for who, headers in callers.items():
        for path in ONE_PART + TWO_PART:
            if who == "company" and path in ADMIN_ONLY:
                continue
            values = ["\ud800"] if path in ONE_PART else ["2024-01-01T00:00:00Z", "\ud800"]
            response = deployment.get(path, headers, cursor=cursor(*values))
            answers[(who, path)] = (response.status_code, response.json().get("error"))
            assert deployment.get(path, headers).status_code == 200, (who, path)
    assert set(answers.values()) == {(400, "invalid_parameter")}, answers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/admin/replay", {"company_id": "\ud800", "dry_run": True}),
        ("/v1/admin/replay", {"event_type": ["connection.connected", "\udc00"], "dry_run": True}),
        ("/v1/admin/imports", {"company_id": ["\ud800"]}),
    ],
)
def test_a_lone_surrogate_in_an_admin_body_is_a_400_naming_the_field(
    deployment: Deployment, path: str, body: dict[str, object]
) -> None:
    raw = json.dumps(body)  # ASCII: the surrogate travels as the escape \\ud800, as a client would send it
    response = httpx.post(
        f"{deployment.base}{path}",
        content=raw,
        headers={**ADMIN_HEADERS, "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_parameter"
    assert "lone UTF-16 surrogate" in response.json()["detail"]


def test_bytes_of_a_surrogate_anywhere_else_in_a_request_are_never_a_5xx(deployment: Deployment) -> None:
    token = bearer(company_token(COMPANY))
    utf8_surrogate = "%ED%A0%80"  # what UTF-8 would be for U+D800, were it allowed; decoded as U+FFFD
    for path, headers in [
        (f"/v1/events?event_type={utf8_surrogate}&connection_id={utf8_surrogate}", ADMIN_HEADERS),
        (f"/v1/events?company_id={utf8_surrogate}", ADMIN_HEADERS),
        (f"/v1/connections?source_type={utf8_surrogate}", token),
        (f"/v1/connections/{CONNECTION}/syncs?data_type={utf8_surrogate}", token),
        (f"/v1/events/{utf8_surrogate}", token),
        (f"/v1/connections/{utf8_surrogate}", ADMIN_HEADERS),
    ]:
        response = httpx.get(f"{deployment.base}{path}", headers=headers, timeout=10)
        assert response.status_code in (200, 400, 404), (path, response.status_code, response.text)


def test_every_v1_answer_says_no_store_tokens_data_errors_and_the_stream_alike(deployment: Deployment) -> None:
    base, token = deployment.base, bearer(company_token(COMPANY))
    answers = {
        "minted token": httpx.post(f"{base}/v1/tokens", json={"company_id": COMPANY}, headers=ADMIN_HEADERS),
        "list": httpx.get(f"{base}/v1/companies", headers=ADMIN_HEADERS),
        "company read": httpx.get(f"{base}/v1/connections/{CONNECTION}", headers=token),
        "no token (401)": httpx.get(f"{base}/v1/companies"),
        "admin route, company token (403)": httpx.get(f"{base}/v1/companies", headers=token),
        "unknown id (404)": httpx.get(f"{base}/v1/connections/conn-unknown", headers=ADMIN_HEADERS),
        "unknown route (404)": httpx.get(f"{base}/v1/nothing-here", headers=ADMIN_HEADERS),
        "bad cursor (400)": httpx.get(f"{base}/v1/events", params={"cursor": "%%"}, headers=ADMIN_HEADERS),
        "wrong method (405)": httpx.put(f"{base}/v1/companies", headers=ADMIN_HEADERS),
        "not JSON (415)": httpx.post(f"{base}/v1/tokens", content=b"x", headers=ADMIN_HEADERS),
        "headers too large (431)": httpx.get(
            f"{base}/v1/companies", headers={**ADMIN_HEADERS, **{f"x-filler-{i}": "x" for i in range(120)}}
        ),
        "stream refused (401)": httpx.get(f"{base}/v1/stream"),
        "stream of another company (404)": httpx.get(f"{base}/v1/stream", params={"company_id": "x"}, headers=token),
    }
    with httpx.Client() as client, client.stream("GET", f"{base}/v1/stream", headers=token) as stream:
        answers["stream"] = stream
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses["minted token"] == 201 and statuses["stream"] == 200 and statuses["list"] == 200, statuses
    cached = {name: answer.headers.get("cache-control") for name, answer in answers.items()}
    assert set(cached.values()) == {"no-store"}, cached


def padded(size: int) -> bytes:
    """A JSON replay request (a dry run) of exactly `size` bytes."""
    head, tail = b'{"dry_run": true, "event_type": ["', b'"]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_an_admin_body_over_the_limit_is_a_413_and_one_at_the_limit_is_read(deployment: Deployment) -> None:
    url, headers = f"{deployment.base}/v1/admin/replay", {**ADMIN_HEADERS, "content-type": "application/json"}

    at_limit = httpx.post(url, content=padded(MAX_ADMIN_BODY_BYTES), headers=headers, timeout=10)
    over = httpx.post(url, content=padded(MAX_ADMIN_BODY_BYTES + 1), headers=headers, timeout=10)
    undeclared = httpx.post(url, content=iter([padded(MAX_ADMIN_BODY_BYTES + 1)]), headers=headers, timeout=10)

    assert at_limit.status_code == 200, at_limit.text
    assert "content-length" not in undeclared.request.headers
    for answer in (over, undeclared):
        assert answer.status_code == 413, answer.text
        assert answer.json() == {
            "error": "payload_too_large",
            "detail": f"the body is larger than the {MAX_ADMIN_BODY_BYTES}-byte limit (SYNCTRACK_MAX_ADMIN_BODY_BYTES)",
        }


@pytest.mark.parametrize("declared", [True, False])
def test_an_oversized_admin_body_is_refused_before_the_rest_of_it_is_sent(
    deployment: Deployment, declared: bool
) -> None:
    host, port = deployment.base.removeprefix("http://").split(":")
    size = "Content-Length: 104857600" if declared else "Transfer-Encoding: chunked"
    head = (
        f"POST /v1/admin/imports HTTP/1.1\r\nHost: {host}\r\nAuthorization: {ADMIN_HEADERS['Authorization']}\r\n"
        f"Content-Type: application/json\r\n{size}\r\n\r\n"
    )
    part = b'{"company_id": ["' + b"x" * (MAX_ADMIN_BODY_BYTES + 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.sendall(part if declared else b"%x\r\n%b\r\n" % (len(part), part))
        answer = b""
        while b"payload_too_large" not in answer:  # the body is never finished: only a refusal can come
            chunk = sock.recv(1 << 16)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
