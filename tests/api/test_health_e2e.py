"""Health end to end: signed webhooks, in an order unlike Codat's, into real `synctrack web` + `synctrack worker`
processes on the real Redis. Each connection's health, reason and next action over HTTP; `?health=` across
companies; each change announced once on the stream and to a subscription filtered on
`connection.health_changed`; `/metrics` counting connections by health."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import BASE_TIME, COMPANY, connection_error, connection_event, read_completed
from tests.support.services import free_port, start_web_and_worker, wait_for
from tests.support.sse_client import SseClient
from tests.support.subscription_support import dispatcher_ready, post_webhook, service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

FAILING, REAUTH, LINK_FAILED = "conn-failing", "conn-reauth", "conn-link-failed"


def minutes_ago(minutes: float) -> float:
    """The builders' `minutes` of a moment `minutes` before now."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60 - minutes


@pytest.fixture
def service(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[str]:
    # Every webhook here is live (generated minutes ago), so they fold in the order they arrive: the order this test
    # chose. Older ones would fold on the backfill lane beside the live ones, in an order of the workers' choosing.
    env = service_env(
        tmp_path, SYNCTRACK_REDIS_URL=redis_url, SYNCTRACK_REDIS_NAMESPACE=namespace, SYNCTRACK_LIVE_WINDOW="1h"
    )
    upgrade(env["SYNCTRACK_DATABASE_URL"])
    port = free_port()
    with ExitStack() as stack:
        start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=4)
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: dispatcher_ready(client, namespace), timeout=30, message="dispatcher consumer group")
        yield f"http://127.0.0.1:{port}"


def health_gauge(api: httpx.Client) -> dict[str, float]:
    text = api.get("/metrics").text
    return {
        s.labels["health"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "synctrack_connections_by_health" and s.labels.get("source_type") == "Banking"
    }


def transitions(events: list[dict[str, Any]], connection_id: str) -> list[tuple[str | None, str, str]]:
    return [(e["previous"], e["current"], e["next_action"]) for e in events if e["connection"]["id"] == connection_id]


def test_each_connection_says_what_it_needs_and_each_change_is_announced_once(service: str) -> None:
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=service, timeout=30, headers=ADMIN_HEADERS) as api,
        SseClient(f"{service}/v1/stream?company_id={COMPANY}", headers=ADMIN_HEADERS) as stream,
    ):
        sub = subscribe(api, receiver.url("/health"), event_types=["connection.health_changed"])
        receiver.expect("/health", [sub["secret"]])
        assert stream.next().event == "snapshot"
        seen: list[dict[str, Any]] = []

        def stream_until(count: int, timeout: float = 30) -> list[dict[str, Any]]:
            deadline = time.monotonic() + timeout
            while len(seen) < count and time.monotonic() < deadline:
                event = stream.next(timeout=max(0.1, deadline - time.monotonic()))
                if event.event == "connection.health_changed":
                    seen.append(event.json())
            return seen

        # Every result arrives before the link it follows, as Codat's retries allow.
        webhooks = [
            read_completed([("invoices", "FetchError")], connection_id=FAILING, minutes=minutes_ago(5)),
            connection_event(connection_id=FAILING, platform="Xero", minutes=minutes_ago(10)),
            read_completed([("invoices", "AuthError")], connection_id=REAUTH, minutes=minutes_ago(5)),
            connection_event(connection_id=REAUTH, platform="Sage", minutes=minutes_ago(10)),
            connection_event(
                "connection.failed",
                connection_id=LINK_FAILED,
                platform="HSBC",
                minutes=minutes_ago(5),
                errors=[connection_error("403", "User cancelled linking")],
            ),
            connection_event("connection.created", connection_id=LINK_FAILED, platform="HSBC", minutes=minutes_ago(10)),
        ]
        for i, body in enumerate(webhooks):
            post_webhook(api, body, msg_id=f"msg_{i}")
        stream_until(3)

        by_id = {c["id"]: c for c in api.get(f"/v1/companies/{COMPANY}/connections").json()["items"]}
        assert {cid: (c["health"], c["next_action"]) for cid, c in by_id.items()} == {
            FAILING: ("failing", "refresh"),
            REAUTH: ("needs_reauth", "reconnect"),
            LINK_FAILED: ("link_failed", "reconnect"),
        }
        assert (
            by_id[FAILING]["health_reason"] == "Syncing invoices from Xero failed (FetchError): a refresh may fix it."
        )
        assert by_id[FAILING]["health_data_type"] == "invoices"
        assert "Sage" in by_id[REAUTH]["health_reason"] and "invoices" in by_id[REAUTH]["health_reason"]
        assert "User cancelled linking" in by_id[LINK_FAILED]["health_reason"]
        detail = api.get(f"/v1/connections/{REAUTH}").json()
        assert (detail["health"], detail["next_action"]) == ("needs_reauth", "reconnect")

        listed = api.get("/v1/connections?health=failing&health=needs_reauth").json()["items"]
        assert [c["id"] for c in listed] == [FAILING, REAUTH]
        assert [c["id"] for c in api.get("/v1/connections?health=link_failed,healthy").json()["items"]] == [LINK_FAILED]
        unknown = api.get("/v1/connections?health=poorly")
        assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_parameter")
        assert {k: v for k, v in health_gauge(api).items() if v} == {"failing": 1, "needs_reauth": 1, "link_failed": 1}

        # The next read of invoices succeeds: the connection is healthy at once, announced with that webhook.
        post_webhook(
            api, read_completed([("invoices", "Complete")], connection_id=FAILING, minutes=minutes_ago(1)), "msg_ok"
        )
        stream_until(4)
        assert transitions(seen, FAILING) == [(None, "failing", "refresh"), ("failing", "healthy", "none")]
        assert transitions(seen, REAUTH) == [(None, "needs_reauth", "reconnect")]
        assert transitions(seen, LINK_FAILED) == [(None, "link_failed", "reconnect")]
        healed = seen[-1]
        assert (healed["event_id"], healed["connection"]["health"]) == ("msg_ok", "healthy")
        assert healed["connection"]["health_reason"] == "Xero is linked and nothing needs doing."
        assert set(healed) == {"connection", "previous", "current", "next_action", "event_id"}
        assert api.get(f"/v1/connections/{FAILING}").json()["health"] == "healthy"
        assert health_gauge(api).get("healthy") == 1
        assert [e for e in stream.drain(quiet=0.5) if e.event == "connection.health_changed"] == []  # once each

        delivered = wait_for(lambda: len(receiver.at("/health", ok_only=True)) >= 4 or None, timeout=30)
        assert delivered
        time.sleep(0.5)
        bodies = [r.body for r in receiver.at("/health", ok_only=True)]
        assert {b["type"] for b in bodies} == {"connection.health_changed"}
        assert sorted(
            (b["data"]["connection"]["id"], b["data"]["previous"] or "", b["data"]["current"]) for b in bodies
        ) == sorted((e["connection"]["id"], e["previous"] or "", e["current"]) for e in seen)
