"""Freshness end to end: signed webhooks into real `synctrack web` + `synctrack worker` processes on the real
Redis, a threshold of seconds, and the periodic check running in the worker. The stream and an outbound
subscription filtered on `connection.freshness_changed` must both hear: first seen (pending), fresh after
the first read, overdue when the clock passes the threshold (no webhook), fresh again at once after the
next read; `/metrics` counts the connection by its freshness."""

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
from tests.support.builders import BASE_TIME, COMPANY, CONNECTION, connection_event, read_completed
from tests.support.services import free_port, start_web_and_worker, wait_for
from tests.support.sse_client import SseClient
from tests.support.subscription_support import dispatcher_ready, post_webhook, service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

THRESHOLD_SECONDS = 8


def now_minutes() -> float:
    """The builders' `minutes` of the present moment."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60


@pytest.fixture
def service(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[str]:
    env = service_env(
        tmp_path,
        SYNCTRACK_REDIS_URL=redis_url,
        SYNCTRACK_REDIS_NAMESPACE=namespace,
        SYNCTRACK_FRESHNESS_AFTER=f"{THRESHOLD_SECONDS}s",
        SYNCTRACK_FRESHNESS_CHECK_SECONDS="1",
    )
    upgrade(env["SYNCTRACK_DATABASE_URL"])
    port = free_port()
    with ExitStack() as stack:
        start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=4)
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: dispatcher_ready(client, namespace), timeout=30, message="dispatcher consumer group")
        yield f"http://127.0.0.1:{port}"


def freshness_gauge(api: httpx.Client) -> dict[str, float]:
    text = api.get("/metrics").text
    return {
        s.labels["freshness"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "synctrack_connections_by_freshness" and s.labels.get("source_type") == "Banking"
    }


def transitions(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["previous"], e["current"]) for e in events]


def test_freshness_changes_reach_the_stream_and_subscribers_from_folds_and_from_the_clock(service: str) -> None:
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=service, timeout=30, headers=ADMIN_HEADERS) as api,
        SseClient(f"{service}/v1/stream?company_id={COMPANY}", headers=ADMIN_HEADERS) as stream,
    ):
        sub = subscribe(api, receiver.url("/freshness"), event_types=["connection.freshness_changed"])
        receiver.expect("/freshness", [sub["secret"]])
        assert stream.next().event == "snapshot"
        seen: list[dict[str, Any]] = []

        def stream_until(count: int, timeout: float = 30) -> list[dict[str, Any]]:
            deadline = time.monotonic() + timeout
            while len(seen) < count and time.monotonic() < deadline:
                event = stream.next(timeout=max(0.1, deadline - time.monotonic()))
                if event.event == "connection.freshness_changed":
                    seen.append(event.json())
            return seen

        post_webhook(api, connection_event(minutes=now_minutes()), msg_id="msg_connected")
        assert transitions(stream_until(1)) == [(None, "pending")]
        post_webhook(api, read_completed([("banking-transactions", "Complete")], minutes=now_minutes()), "msg_read")
        assert transitions(stream_until(2)) == [(None, "pending"), ("pending", "fresh")]
        assert [e["event_id"] for e in seen] == ["msg_connected", "msg_read"]

        # No webhook: the periodic check notices the threshold passing.
        overdue = stream_until(3, timeout=THRESHOLD_SECONDS + 20)[2]
        assert (overdue["previous"], overdue["current"], overdue["event_id"]) == ("fresh", "overdue", None)
        assert overdue["overdue_data_types"] == ["banking-transactions"]
        assert overdue["connection"]["id"] == CONNECTION
        assert overdue["connection"]["freshness"] == "overdue"
        detail = api.get(f"/v1/connections/{CONNECTION}").json()
        assert (detail["freshness"], detail["overdue_data_types"]) == ("overdue", ["banking-transactions"])
        assert [c["id"] for c in api.get("/v1/connections?freshness=overdue").json()["items"]] == [CONNECTION]
        assert freshness_gauge(api).get("overdue") == 1

        post_webhook(api, read_completed([("banking-transactions", "Complete")], minutes=now_minutes()), "msg_again")
        again = stream_until(4, timeout=10)[3]
        assert (again["previous"], again["current"], again["event_id"]) == ("overdue", "fresh", "msg_again")
        assert freshness_gauge(api).get("fresh") == 1

        delivered = wait_for(lambda: len(receiver.at("/freshness", ok_only=True)) >= 4 or None, timeout=30)
        assert delivered
        bodies = sorted((r.body for r in receiver.at("/freshness", ok_only=True)), key=lambda b: b["id"])
        assert {b["type"] for b in bodies} == {"connection.freshness_changed"}
        assert transitions([b["data"] for b in bodies]) == transitions(seen[:4])
        assert all(all(r.verified.values()) for r in receiver.at("/freshness"))
