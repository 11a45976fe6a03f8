"""`POST /v1/tokens/{token_id}/revoke`: a revoked company token answers 401 on its next request in every web
process, and the audit log says who revoked it. Two real `synctrack web` processes share the real Redis;
the token is minted and revoked through one and used against both.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV, bearer
from tests.support.builders import SECRET, connection_event, signed_request
from tests.support.services import ServiceProcess, free_port, run_db_upgrade, wait_for, wait_until_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def two_webs(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[tuple[str, str]]:
    env = {
        **AUTH_ENV,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_STREAM_TOKEN_IN_QUERY": "true",
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    ports = (free_port(), free_port())
    with ExitStack() as stack:
        for n, port in enumerate(ports):
            web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, f"web-{n}")
            stack.callback(web.stop)
            wait_until_healthy(f"http://127.0.0.1:{port}", web, timeout=90)
        worker = ServiceProcess(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, "worker")
        stack.callback(worker.stop)
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"


def test_a_revoked_token_answers_401_in_every_web_process_and_the_audit_log_names_who_revoked_it(
    two_webs: tuple[str, str], redis_url: str, namespace: str
) -> None:
    first, second = two_webs
    event = connection_event()
    company = event["payload"]["referenceCompany"]["id"]
    body, headers = signed_request(event)
    assert httpx.post(f"{first}/webhooks/codat", content=body, headers=headers).status_code == 202
    minted = httpx.post(f"{first}/v1/tokens", json={"company_id": company, "ttl_seconds": 600}, headers=ADMIN_HEADERS)
    assert minted.status_code == 201, minted.text
    token, token_id = minted.json()["token"], minted.json()["token_id"]
    kept = httpx.post(f"{first}/v1/tokens", json={"company_id": company}, headers=ADMIN_HEADERS).json()["token"]
    for base in (first, second):
        assert httpx.get(f"{base}/v1/events", headers=bearer(token)).status_code == 200

    revoked = httpx.post(f"{first}/v1/tokens/{token_id}/revoke", headers=ADMIN_HEADERS)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["company_id"] == company
    assert revoked.json()["revoked_by"].startswith("admin:")
    for base in (second, first):
        for path in ("/v1/events", f"/v1/companies/{company}/connections", f"/v1/stream?access_token={token}"):
            response = httpx.get(f"{base}{path}", headers={} if "access_token" in path else bearer(token))
            assert response.status_code == 401, (base, path, response.text)
            assert response.json() == {"error": "unauthorized", "detail": "the token has been revoked"}
        assert httpx.get(f"{base}/v1/events", headers=bearer(kept)).status_code == 200, "other tokens still work"

    audit = wait_for(
        lambda: [r for r in httpx.get(f"{second}/v1/audit?action=revoke_token", headers=ADMIN_HEADERS).json()["items"]],
        timeout=10,
        message="the revocation in the audit log",
    )
    (record,) = audit
    assert record["actor"] == revoked.json()["revoked_by"]
    assert record["company_id"] == company and token_id in record["detail"]

    # Kept in Redis until the token expires (600 s), not for ever and not shorter.
    ttl = redis.Redis.from_url(redis_url).ttl(f"{namespace}:revoked-token:{token_id}")
    assert 590 <= ttl <= 600
    assert revoked.json()["kept_until"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 601))


def test_only_admins_revoke_and_a_malformed_id_is_a_400(two_webs: tuple[str, str]) -> None:
    first, _ = two_webs
    token = httpx.post(f"{first}/v1/tokens", json={"company_id": "c-1"}, headers=ADMIN_HEADERS).json()
    own = httpx.post(f"{first}/v1/tokens/{token['token_id']}/revoke", headers=bearer(token["token"]))
    assert own.status_code == 403
    assert httpx.post(f"{first}/v1/tokens/%20x/revoke", headers=ADMIN_HEADERS).status_code == 400
