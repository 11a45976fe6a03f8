"""A sync Codat is still running is not a failure, end to end: the fake Codat holds a connection's datasets
`Queued` (as an on-premise connector's wait while it is offline) and sends its signed webhooks to real
`synctrack web` + `synctrack worker` processes on the real Redis, whose stale check runs every second with a
stale limit of two seconds. The API, the stream and a signed subscription filtered on `sync.delayed` must
show the sync active and delayed — announced once per Codat status, not at every check — until Codat
completes it, when its result is folded with source `reconcile`; a sync Codat knows nothing of turns stale.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlmodel import Session

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import SECRET
from tests.support.services import free_port, start_web_and_worker, wait_for
from tests.support.sse_client import SseClient
from tests.support.subscription_support import dispatcher_ready, service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver
from workers.ledger.tables import Sync
from workers.runtime.db import make_engine, upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

KEY = "delayed-e2e-key"
EVENTS = ["sync.delayed", "sync.completed", "sync.failed"]


@dataclass
class Service:
    api: httpx.Client
    fake: FakeCodatServer
    base: str
    database_url: str

    def sync_row(self, sync_id: str) -> Sync | None:
        engine = make_engine(self.database_url)
        try:
            with Session(engine) as session:
                return session.get(Sync, sync_id)
        finally:
            engine.dispose()

    def asked(self, company_id: str, path: str = "/dataStatus") -> int:
        return sum(1 for r in self.fake.control.requests() if r["path"] == f"/companies/{company_id}{path}")


@pytest.fixture
def service(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Service]:
    port = free_port()
    config = Config(sync_seconds=0.4, api_key=KEY)
    receiver_url = f"http://127.0.0.1:{port}/webhooks/codat"
    with FakeCodatServer(receiver_url=receiver_url, secret=SECRET, config=config) as fake, ExitStack() as stack:
        env = service_env(
            tmp_path,
            SYNCTRACK_REDIS_URL=redis_url,
            SYNCTRACK_REDIS_NAMESPACE=namespace,
            SYNCTRACK_CODAT_BASE_URL=fake.url,
            SYNCTRACK_CODAT_API_KEY=KEY,
            SYNCTRACK_RECONCILE_EVERY="0",  # only the stale check asks Codat
            SYNCTRACK_SYNC_STALE_AFTER="2",
            SYNCTRACK_SYNC_STALE_CHECK_SECONDS="1",
        )
        upgrade(env["SYNCTRACK_DATABASE_URL"])
        start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        wait_for(lambda: dispatcher_ready(redis.Redis.from_url(redis_url), namespace), message="dispatcher ready")
        base = f"http://127.0.0.1:{port}"
        api = stack.enter_context(httpx.Client(base_url=base, timeout=20, headers=ADMIN_HEADERS))
        yield Service(api, fake, base, env["SYNCTRACK_DATABASE_URL"])


def next_change(stream: SseClient, timeout: float = 30) -> tuple[str, dict[str, Any]]:
    """The next sync event on the stream (others are skipped)."""
    while True:
        event = stream.next(timeout=timeout)
        if event.event in EVENTS:
            return event.event, event.json()


def delivered(receiver: WebhookReceiver, path: str) -> list[tuple[str, str, str | None]]:
    """(type, sync id, codat_status) of each distinct delivery, in the order the changes happened."""
    bodies = {r.webhook_id: r.body for r in receiver.at(path, ok_only=True)}
    ordered = sorted(bodies.values(), key=lambda b: tuple(int(part) for part in b["id"].split("-")))
    return [(b["type"], b["data"]["id"], b["data"].get("codat_status")) for b in ordered]


def test_a_read_codat_keeps_queued_stays_active_and_delayed_until_codat_completes_it(service: Service) -> None:
    company = str(uuid.uuid4())
    with (
        WebhookReceiver() as receiver,
        SseClient(f"{service.base}/v1/stream?company_id={company}", headers=ADMIN_HEADERS) as stream,
    ):
        sub = subscribe(service.api, receiver.url("/delays"), event_types=EVENTS)
        receiver.expect("/delays", [sub["secret"]])
        assert stream.next().event == "snapshot"
        seeded = service.fake.control.seed(companies=[{"id": company, "platforms": ["xero"], "hold": "Queued"}])[0]
        connection = seeded["connections"][0]["id"]

        name, delayed = next_change(stream)
        assert name == "sync.delayed"
        assert (delayed["connection_id"], delayed["data_type"], delayed["phase"]) == (connection, "*", "active")
        assert (delayed["delayed"], delayed["codat_status"], delayed["event_id"]) == (True, "Queued", None)
        active = service.api.get("/v1/syncs/active", params={"company_id": company}).json()["items"]
        assert [(s["id"], s["delayed"], s["codat_status"]) for s in active] == [(delayed["id"], True, "Queued")]
        history = service.api.get(f"/v1/connections/{connection}/syncs").json()["items"]
        assert [(s["id"], s["phase"], s["delayed"], s["codat_status"]) for s in history] == [
            (delayed["id"], "active", True, "Queued")
        ]

        # Asked again at later checks, each wait twice the last, without announcing the same answer again.
        asked = service.asked(company)
        wait_for(lambda: service.asked(company) >= asked + 2, timeout=20, message="two more checks")
        row = service.sync_row(delayed["id"])
        assert row is not None and row.next_check_at is not None and row.check_wait_seconds is not None
        assert row.check_wait_seconds >= 4  # 1 s, then 2 s, then 4 s
        assert 0 < (row.next_check_at - datetime.now(UTC)).total_seconds() <= row.check_wait_seconds
        assert [e.event for e in stream.drain(quiet=0.5) if e.event in EVENTS] == []

        service.fake.control.hold(connection, "Fetching")
        name, fetching = next_change(stream)
        assert (name, fetching["id"], fetching["codat_status"]) == ("sync.delayed", delayed["id"], "Fetching")

        service.fake.control.webhooks(mode="drop")  # Codat's webhook is lost: only asking Codat can tell
        service.fake.control.hold(connection, None)
        closed: dict[str, Any] = {}
        while closed.get("id") != delayed["id"]:
            name, closed = next_change(stream)
            assert name == "sync.completed"
        assert (closed["phase"], closed["delayed"], closed["codat_status"]) == ("succeeded", False, None)
        assert service.api.get("/v1/syncs/active", params={"company_id": company}).json()["items"] == []
        history = service.api.get(f"/v1/connections/{connection}/syncs").json()["items"]
        assert history and {(s["phase"], s["source"], s["delayed"]) for s in history} == {
            ("succeeded", "reconcile", False)
        }
        assert service.api.get(f"/v1/connections/{connection}").json()["sync_active"] is False

        wait_for(
            lambda: ("sync.completed", delayed["id"], None) in delivered(receiver, "/delays"),
            timeout=30,
            message="the subscription heard the sync complete",
        )
        sent = [d for d in delivered(receiver, "/delays") if d[1] == delayed["id"]]
        assert sent == [
            ("sync.delayed", delayed["id"], "Queued"),
            ("sync.delayed", delayed["id"], "Fetching"),
            ("sync.completed", delayed["id"], None),
        ]
        assert all(r.verified and all(r.verified.values()) for r in receiver.at("/delays"))


def test_a_refresh_is_followed_by_its_dataset_id_and_a_read_codat_knows_nothing_of_turns_stale(
    service: Service,
) -> None:
    company = str(uuid.uuid4())
    with SseClient(f"{service.base}/v1/stream?company_id={company}", headers=ADMIN_HEADERS) as stream:
        assert stream.next().event == "snapshot"
        seeded = service.fake.control.seed(companies=[{"id": company, "platforms": ["xero"]}], initial_read=False)[0]
        connection = seeded["connections"][0]["id"]

        # The link opened a read of everything, but Codat has no read of this company at all.
        name, stale = next_change(stream)
        assert (name, stale["data_type"], stale["phase"], stale["delayed"]) == ("sync.failed", "*", "stale", False)

        service.fake.control.hold(connection, "Queued")
        answer = service.api.post(f"/v1/companies/{company}/refresh/invoices", params={"connection_id": connection})
        assert answer.status_code == 202, answer.text
        [started] = answer.json()["syncs"]
        name, delayed = next_change(stream)
        assert (name, delayed["id"], delayed["codat_status"], delayed["source"]) == (
            "sync.delayed",
            started["id"],
            "Queued",
            "action",
        )

        service.fake.control.webhooks(mode="drop")
        service.fake.control.hold(connection, None)
        name, closed = next_change(stream)
        assert (name, closed["id"], closed["phase"], closed["source"]) == (
            "sync.completed",
            started["id"],
            "succeeded",
            "reconcile",
        )
        assert service.asked(company, f"/data/history/{started['id']}") >= 1
