"""`SYNCTRACK_ACTIONS_PER_MINUTE` on real processes: two `synctrack web` share the real Redis and a fake Codat.
A burst of refreshes from one company's token, spread over both processes, reaches Codat at most the limit
(10 by default) times a minute; the rest are 429 `rate_limited` with `Retry-After`, audited, and the company's
unlink and delete are refused too. Other companies' tokens and admin tokens go on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV, bearer, company_token
from tests.support.builders import SECRET, connection_event, signed_request
from tests.support.services import ServiceProcess, free_port, run_db_upgrade, wait_for, wait_until_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

KEY = "action-limit-key"
RIGHTS = ("read", "refresh", "disconnect", "delete")


@pytest.fixture
def two_webs(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[tuple[list[str], FakeCodatServer]]:
    with FakeCodatServer(config=Config(api_key=KEY, sync_seconds=600)) as fake, ExitStack() as stack:
        env = {
            **AUTH_ENV,
            "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "SYNCTRACK_REDIS_URL": redis_url,
            "SYNCTRACK_REDIS_NAMESPACE": namespace,
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
        }
        assert run_db_upgrade(env, tmp_path, 60).returncode == 0
        bases = []
        for n in range(2):
            port = free_port()
            web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, f"web-{n}")
            stack.callback(web.stop)
            wait_until_healthy(f"http://127.0.0.1:{port}", web, timeout=90)
            bases.append(f"http://127.0.0.1:{port}")
        worker = ServiceProcess(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, "worker")
        stack.callback(worker.stop)
        yield bases, fake


def burst(bases: list[str], path: str, headers: dict[str, str], count: int) -> list[httpx.Response]:
    """`count` POSTs at once, alternating between the web processes."""

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(client.post(f"{bases[i % len(bases)]}{path}", headers=headers) for i in range(count))
            )

    return asyncio.run(fire())


def codat_calls(fake: FakeCodatServer, company_id: str) -> list[dict[str, Any]]:
    """The actions Codat received for the company (refreshes, unlinks, deletes), not the workers' own reads."""
    return [r for r in fake.control.requests() if company_id in r["path"] and r["method"] != "GET"]


def test_one_companys_tokens_reach_codat_at_most_the_limit_a_minute_across_web_processes(
    two_webs: tuple[list[str], FakeCodatServer],
) -> None:
    bases, fake = two_webs
    mine, other = fake.control.seed(2, announce=False, initial_read=False)
    company = mine["id"]
    connection = mine["connections"][0]["id"]
    body, headers = signed_request(connection_event(company_id=company, connection_id=connection))
    assert httpx.post(f"{bases[0]}/webhooks/codat", content=body, headers=headers).status_code == 202
    wait_for(
        lambda: httpx.get(f"{bases[1]}/v1/connections/{connection}", headers=ADMIN_HEADERS).status_code == 200,
        message="the connection folded",
    )
    token = bearer(company_token(company, RIGHTS))

    answers = burst(bases, f"/v1/companies/{company}/refresh", token, 30)

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * 10 + [429] * 20
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"] == "rate_limited"
        assert "SYNCTRACK_ACTIONS_PER_MINUTE" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(codat_calls(fake, company)) == 10

    unlink = httpx.post(f"{bases[1]}/v1/connections/{connection}/unlink", headers=token)
    delete = httpx.delete(f"{bases[0]}/v1/connections/{connection}", headers=token)
    assert [(r.status_code, r.json()["error"]) for r in (unlink, delete)] == [(429, "rate_limited")] * 2
    assert len(codat_calls(fake, company)) == 10

    audit = httpx.get(f"{bases[0]}/v1/audit", params={"limit": "100"}, headers=token).json()["items"]
    results = sorted((a["action"], a["result"]) for a in audit)
    expected = [("delete", "rate_limited"), ("unlink", "rate_limited")]
    assert results == sorted(expected + [("refresh", "accepted")] * 10 + [("refresh", "rate_limited")] * 20)
    assert all(a["actor"].startswith(f"company:{company}:") for a in audit)

    elsewhere = httpx.post(
        f"{bases[1]}/v1/companies/{other['id']}/refresh", headers=bearer(company_token(other["id"], RIGHTS))
    )
    assert elsewhere.status_code == 202, elsewhere.text
    admin = burst(bases, f"/v1/companies/{company}/refresh", ADMIN_HEADERS, 3)
    assert [a.status_code for a in admin] == [202] * 3
    assert len(codat_calls(fake, company)) == 13
