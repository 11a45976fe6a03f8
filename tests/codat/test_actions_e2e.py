"""Each action end to end: `synctrack web` + `synctrack worker` on the real Redis and PostgreSQL
against the fake Codat over HTTP. Click → 202 → active sync on the API, the change feed and the SSE stream → the
fake's signed webhook → the sync completes, connection times move, the audit record is confirmed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import (
    REDIS_URL,
    free_port,
    fresh_postgres_database,
    postgres_unavailable,
    redis_unavailable,
    start_web_and_worker,
    wait_for,
)
from tests.support.sse_client import SseClient
from workers.ledger.changes import stream_key
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

KEY = "e2e-codat-key"


@dataclass
class Stack:
    api: httpx.Client
    fake: FakeCodatServer
    redis: redis.Redis
    namespace: str

    def company(self, *platforms: str) -> dict[str, Any]:
        """A company Codat announces (created, connected); waits until the ledger shows it Linked."""
        company: dict[str, Any] = self.fake.control.seed(
            companies=[{"platforms": list(platforms)}], initial_read=False
        )[0]
        for conn in company["connections"]:
            wait_for(lambda c=conn: self.api.get(f"/v1/connections/{c['id']}").json().get("status") == "Linked")
        return company

    def feed(self, event: str) -> list[dict[str, Any]]:
        entries = self.redis.xrange(stream_key(self.namespace))
        return [json.loads(f[b"data"]) for _, f in entries if f[b"event"] == event.encode()]  # type: ignore[union-attr,index]

    def confirmed_audit(self, company_id: str) -> dict[str, Any]:
        def latest() -> dict[str, Any] | None:
            item: dict[str, Any] = self.api.get("/v1/audit", params={"company_id": company_id}).json()["items"][0]
            return item if item["confirmed_by_event_id"] else None

        found: dict[str, Any] = wait_for(latest, timeout=20, message="the audit record is confirmed")
        return found


# PostgreSQL here (the deployment shape); `synctrack dev` on SQLite runs in test_reconcile.py and test_demo.py.
@pytest.fixture(scope="module", params=["postgres"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if reason := redis_unavailable():
        pytest.skip(reason)
    if request.param == "postgres" and (reason := postgres_unavailable()):
        pytest.skip(reason)
    tmp: Path = tmp_path_factory.mktemp(f"actions-{request.param}")
    namespace = f"synctrack-test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    with ExitStack() as stack:
        if request.param == "postgres":
            database_url = stack.enter_context(fresh_postgres_database())
        else:
            database_url = f"sqlite:///{tmp / 'ledger.db'}"
        upgrade(database_url)
        fake = FakeCodatServer(
            receiver_url=f"http://127.0.0.1:{port}/webhooks/codat",
            secret=SECRET,
            config=Config(sync_seconds=1.0, api_key=KEY),
        ).start()
        stack.callback(fake.stop)
        env = {
            "SYNCTRACK_DATABASE_URL": database_url,
            "SYNCTRACK_REDIS_URL": REDIS_URL,
            "SYNCTRACK_REDIS_NAMESPACE": namespace,
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
            **AUTH_ENV,
        }
        start_web_and_worker(stack, env, tmp, port, processes=1, threads=2)
        base = f"http://127.0.0.1:{port}"
        client = redis.Redis.from_url(REDIS_URL)
        stack.callback(
            lambda: client.delete(*client.scan_iter(f"{namespace}:*")) if client.keys(f"{namespace}:*") else 0
        )
        api = stack.enter_context(
            httpx.Client(base_url=base, timeout=20, headers=ADMIN_HEADERS, limits=httpx.Limits(keepalive_expiry=2.0))
        )
        yield Stack(api, fake, client, namespace)


def test_refreshing_a_data_type_shows_an_active_sync_until_codats_webhook_completes_it(stack: Stack) -> None:
    company = stack.company("xero")
    conn = company["connections"][0]["id"]
    before = stack.api.get(f"/v1/connections/{conn}").json()
    assert before["first_sync_at"] is None and before["last_sync_at"] is None

    base = str(stack.api.base_url).rstrip("/")
    stream = SseClient(f"{base}/v1/stream?connection_id={conn}", headers=ADMIN_HEADERS)
    try:
        assert stream.next().event == "snapshot"
        answer = stack.api.post(f"/v1/companies/{company['id']}/refresh/invoices", params={"connection_id": conn})
        assert answer.status_code == 202
        [sync] = answer.json()["syncs"]
        active = stack.api.get("/v1/syncs/active", params={"connection_id": conn}).json()["items"]
        assert sync["id"] in [s["id"] for s in active]
        assert any(s["id"] == sync["id"] and s["source"] == "action" for s in stack.feed("sync.started"))
        seen: list[tuple[str, str | None]] = []
        while ("sync.completed", sync["id"]) not in seen:
            event = stream.next(timeout=20)
            seen.append((event.event, event.json().get("id")))
        assert seen.index(("sync.started", sync["id"])) < seen.index(("sync.completed", sync["id"]))
    finally:
        stream.close()

    after = wait_for(
        lambda: (c := stack.api.get(f"/v1/connections/{conn}").json())["last_sync_at"] and not c["sync_active"] and c,
        message="the sync completed",
    )
    assert after["first_sync_at"] == after["last_sync_at"] == after["last_successful_sync_at"]
    assert after["first_sync_at"] > sync["requested_at"]
    history = stack.api.get(f"/v1/connections/{conn}/syncs", params={"data_type": "invoices"}).json()["items"]
    assert [(s["phase"], s["status"]) for s in history] == [("succeeded", "Complete")]
    audit = stack.confirmed_audit(company["id"])
    assert stack.api.get(f"/v1/events/{audit['confirmed_by_event_id']}").json()["event_type"] == "read.completed"


def test_refreshing_everything_completes_every_data_type_of_every_connection(stack: Stack) -> None:
    company = stack.company("hsbc", "shopify")
    answer = stack.api.post(f"/v1/companies/{company['id']}/refresh")
    assert answer.status_code == 202
    assert {(s["data_type"], s["phase"]) for s in answer.json()["syncs"]} == {("*", "active")}

    def settled() -> bool:
        active = stack.api.get("/v1/syncs/active", params={"company_id": company["id"]}).json()["items"]
        return not active

    wait_for(settled, message="every sync of the company completed")
    for conn in company["connections"]:
        detail = stack.api.get(f"/v1/connections/{conn['id']}").json()
        assert detail["last_successful_sync_at"] is not None
        assert {t["phase"] for t in detail["data_types"]} == {"succeeded"} and len(detail["data_types"]) >= 3
    assert stack.confirmed_audit(company["id"])["action"] == "refresh"


def test_unlinking_shows_unlinked_at_once_keeps_history_and_is_confirmed_by_connection_disconnected(
    stack: Stack,
) -> None:
    company = stack.company("quickbooks")
    conn = company["connections"][0]["id"]
    answer = stack.api.post(f"/v1/connections/{conn}/unlink")
    assert answer.status_code == 202 and answer.json()["connection"]["status"] == "Unlinked"
    assert any(c["id"] == conn and c["status"] == "Unlinked" for c in stack.feed("connection.updated"))
    audit = stack.confirmed_audit(company["id"])
    event = stack.api.get(f"/v1/events/{audit['confirmed_by_event_id']}").json()
    assert event["event_type"] == "connection.disconnected"
    assert stack.api.get(f"/v1/connections/{conn}").json()["status"] == "Unlinked"
    assert stack.api.get(f"/v1/connections/{conn}/syncs").json()["items"] != []


def test_deleting_removes_the_connections_history_and_bodies_and_is_confirmed_by_connection_deleted(
    stack: Stack,
) -> None:
    company = stack.company("sage")
    conn = company["connections"][0]["id"]
    answer = stack.api.delete(f"/v1/connections/{conn}")
    assert answer.status_code == 202
    audit = stack.confirmed_audit(company["id"])
    assert stack.api.get(f"/v1/events/{audit['confirmed_by_event_id']}").json()["event_type"] == "connection.deleted"
    detail = stack.api.get(f"/v1/connections/{conn}").json()
    assert detail["deleted_at"] is not None and detail["data_types"] == []
    assert stack.api.get(f"/v1/connections/{conn}/syncs").json()["items"] == []
    events = stack.api.get("/v1/events", params={"connection_id": conn}).json()["items"]
    assert len(events) >= 3  # created, connected, deleted: the rows stay, their bodies do not
    assert all(stack.api.get(f"/v1/events/{e['id']}").json()["body"] is None for e in events)
