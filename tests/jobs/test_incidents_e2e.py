"""Platform incidents end to end: a real `synctrack dev` beside the fake Codat. Signed webhooks say Xero reads failed
for many companies at once: an incident opens (the HTTP list, the admin stream, a subscription asking for it by
name), each affected company sees only its own connections turn `platform_incident`; successes bring the share
down, it closes, and the fake Codat receives one refresh per connection × data type still failing, audited as
`system:incident`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, bearer, company_token
from tests.support.builders import BASE_TIME, SECRET, read_completed
from tests.support.services import ServiceProcess, free_port, wait_for, wait_until_healthy
from tests.support.sse_client import SseClient, SseEvent
from tests.support.subscription_support import post_webhook, service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

KEY = "incident-key"
OTHER_TYPES = ("accounts", "bills", "customers", "suppliers")


def now_minutes() -> float:
    """The builders' `minutes` of now."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60


@pytest.fixture
def dev(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[tuple[str, FakeCodatServer]]:
    port = free_port()
    config = Config(sync_seconds=0.4, api_key=KEY)
    receiver = f"http://127.0.0.1:{port}/webhooks/codat"
    with FakeCodatServer(receiver_url=receiver, secret=SECRET, config=config) as fake:
        env = service_env(
            tmp_path,
            SYNCTRACK_CODAT_BASE_URL=fake.url,
            SYNCTRACK_CODAT_API_KEY=KEY,
            SYNCTRACK_RECONCILE_EVERY="0",
            SYNCTRACK_KEEPALIVE_AFTER="0",
            SYNCTRACK_INCIDENT_CHECK_SECONDS="1s",
            SYNCTRACK_REDIS_URL=redis_url,
            SYNCTRACK_REDIS_NAMESPACE=namespace,
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR")
        process = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", process)
            yield f"http://127.0.0.1:{port}", fake
        finally:
            process.stop()


def events_named(
    stream: SseClient, names: set[str], count: int, timeout: float = 30, seen: list[SseEvent] | None = None
) -> list[SseEvent]:
    """The first `count` events of these names; every event read on the way is added to `seen`."""
    found: list[SseEvent] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        try:
            event = stream.next(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if seen is not None:
            seen.append(event)
        if event.event in names:
            found.append(event)
    return found


def open_incidents(api: httpx.Client) -> Any:
    return api.get("/v1/platforms/incidents", params={"status": "open"}).json()["items"] or None


def incidents_gauge(api: httpx.Client) -> float:
    text = api.get("/metrics").text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return next(s.value for s in samples if s.name == "synctrack_platform_incidents_open")


def test_many_companies_failing_on_one_platform_open_an_incident_that_closes_and_refreshes_what_it_left(
    dev: tuple[str, FakeCodatServer],
) -> None:
    base, fake = dev
    companies = fake.control.seed(companies=[{"platforms": ["xero", "xero"]}] * 3, initial_read=False)
    (a1, a2), (b1, b2), (c1, c2) = ([c["id"] for c in company["connections"]] for company in companies)
    company_of = {conn["id"]: company["id"] for company in companies for conn in company["connections"]}
    company_a = companies[0]["id"]
    token = company_token(company_a)
    with (
        httpx.Client(base_url=base, timeout=30, headers=ADMIN_HEADERS) as api,
        httpx.Client(base_url=base, timeout=30, headers=bearer(token)) as as_company,
        WebhookReceiver() as receiver,
    ):
        sub = subscribe(api, receiver.url("/incidents"), event_types=["platform.incident_opened"])
        receiver.expect("/incidents", [sub["secret"]])
        wait_for(
            lambda: len(api.get("/v1/connections").json()["items"]) == 6 or None,
            timeout=30,
            message="the six links folded",
        )
        with (
            SseClient(f"{base}/v1/stream", headers=ADMIN_HEADERS) as admin_stream,
            SseClient(f"{base}/v1/stream", headers=bearer(token)) as company_stream,
        ):
            assert admin_stream.next().event == "snapshot"
            assert company_stream.next().event == "snapshot"
            fake.control.clear_requests()

            # Xero fails for five connections of three companies; a sixth reads fine.
            minutes = now_minutes()
            for conn in (a1, a2, b1, b2, c1):
                on = {"connection_id": conn, "company_id": company_of[conn], "minutes": minutes}
                post_webhook(api, read_completed([("invoices", "FetchError")], **on))
            on = {"connection_id": c2, "company_id": company_of[c2], "minutes": minutes}
            post_webhook(api, read_completed([("invoices", "Complete")], **on))

            (incident,) = wait_for(lambda: open_incidents(api), timeout=30, message="an open incident")
            assert set(incident) == {
                "id",
                "platform_key",
                "platform_name",
                "data_types",
                "opened_at",
                "closed_at",
                "affected_connections",
                "failure_share",
            }
            assert (incident["platform_key"], incident["platform_name"]) == ("gbol", "Xero")
            assert incident["closed_at"] is None
            assert (incident["data_types"], incident["affected_connections"]) == (["invoices"], 5)
            assert 0.5 <= incident["failure_share"] <= 1
            assert incidents_gauge(api) == 1
            (opened,) = events_named(admin_stream, {"platform.incident_opened"}, 1)
            assert opened.json() == incident

            # Company A hears of it only as its own connections' health.
            mine = as_company.get(f"/v1/connections/{a1}").json()
            assert (mine["health"], mine["next_action"]) == ("platform_incident", "wait")
            assert "Xero" in mine["health_reason"]
            company_saw: list[SseEvent] = []
            changed = events_named(company_stream, {"connection.health_changed"}, 4, seen=company_saw)
            moves = [(e.json()["connection"]["id"], e.json()["previous"], e.json()["current"]) for e in changed]
            # Each turned failing with its own webhook, then the incident opened.
            assert sorted(moves[2:]) == sorted(
                [(a1, "failing", "platform_incident"), (a2, "failing", "platform_incident")]
            ), moves
            assert as_company.get("/v1/platforms/incidents").status_code == 403
            assert as_company.get(f"/v1/connections/{b1}").status_code == 404
            assert api.get(f"/v1/connections/{c2}").json()["health"] != "platform_incident"

            # Xero recovers: the other data types read fine everywhere, and A1's invoices too.
            minutes = now_minutes()
            for conn in (a1, a2, b1, b2, c1, c2):
                results = [(data_type, "Complete") for data_type in OTHER_TYPES]
                if conn == a1:
                    results.append(("invoices", "Complete"))
                on = {"connection_id": conn, "company_id": company_of[conn], "minutes": minutes}
                post_webhook(api, read_completed(results, **on))

            (closed,) = wait_for(
                lambda: api.get("/v1/platforms/incidents", params={"status": "closed"}).json()["items"] or None,
                timeout=30,
                message="the incident closed",
            )
            assert closed["id"] == incident["id"] and closed["closed_at"] is not None
            assert api.get("/v1/platforms/incidents", params={"status": "open"}).json()["items"] == []
            assert incidents_gauge(api) == 0
            (closed_event,) = events_named(admin_stream, {"platform.incident_closed"}, 1)
            assert closed_event.json() == closed

            # One refresh of each connection × data type still failing, taken at the fake Codat and audited.
            still_failing = {a2, b1, b2, c1}

            def refreshed() -> Any:
                audit = api.get("/v1/audit", params={"action": "refresh"}).json()["items"]
                mine = [a for a in audit if a["actor"] == "system:incident"]
                return mine if len(mine) >= len(still_failing) else None

            audit = wait_for(refreshed, timeout=30, message="the refreshes after the incident")
            assert {(a["connection_id"], a["data_type"], a["result"]) for a in audit} == {
                (conn, "invoices", "accepted") for conn in still_failing
            }
            queued = [r["path"] for r in fake.control.requests() if r["method"] == "POST"]
            assert sorted(queued) == sorted(f"/companies/{company_of[c]}/data/queue/invoices" for c in still_failing)
            time.sleep(2.5)  # two more checks: nothing more is refreshed
            assert len([r for r in fake.control.requests() if r["method"] == "POST"]) == len(still_failing)

            # The company's stream never carried the platform's own events; the admin stream did.
            company_saw += company_stream.drain(quiet=0.5)
            assert [e for e in company_saw if e.event.startswith("platform.")] == []
            assert {e.json()["connection"]["company_id"] for e in changed} == {company_a}
        (delivered,) = wait_for(lambda: receiver.at("/incidents", ok_only=True) or None, timeout=30)
        assert (delivered.body["type"], delivered.body["data"]["id"]) == ("platform.incident_opened", incident["id"])
