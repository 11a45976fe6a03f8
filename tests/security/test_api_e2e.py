"""The JSON API against a caller probing its edges, over real processes: `synctrack web` and `synctrack worker` on
the real Redis, once on SQLite and once on PostgreSQL, webhooks signed and sent through the receiver.

* A stored webhook of no company (a client-wide rate-limit notice) is the admins' alone: a company token asking
  for it by id gets the 404 an unknown id gets.
"""

from __future__ import annotations

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
