"""The live lane, end to end: real `synctrack web` and `synctrack worker` processes on the real Redis and
PostgreSQL. A backlog of signed webhooks Codat generated hours ago (a "recover failed messages") is posted while
no worker runs; then a worker starts and one live webhook arrives. The live event reaches a stream client while
the backlog is still draining, and `/v1/admin/queues` and `/metrics` show the backlog's depth and age, then an
empty queue once it has drained.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import connection_event, iso
from tests.support.services import ServiceProcess, free_port, run_db_upgrade, wait_for, wait_until_healthy
from tests.support.sse_client import SseClient
from tests.support.subscription_support import service_env
from tests.support.workload import Delivery, signed

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

BACKLOG = 1_500


@dataclass
class Stack:
    base: str
    api: httpx.Client
    env: dict[str, str]
    tmp_path: Path
    stack: ExitStack

    def start_worker(self) -> ServiceProcess:
        worker = ServiceProcess(["worker", "--processes", "1", "--threads", "4"], self.env, self.tmp_path, "worker")
        self.stack.callback(worker.stop)
        wait_for(lambda: "result=ready" in worker.output(), 60, message="the worker ready")
        return worker

    def queues(self) -> dict[str, dict[str, Any]]:
        answer = self.api.get("/v1/admin/queues")
        assert answer.status_code == 200, answer.text
        return {item["queue"]: item for item in answer.json()["items"]}


@pytest.fixture
def service(tmp_path: Path, postgres_url: str, redis_url: str, namespace: str) -> Iterator[Stack]:
    env = service_env(
        tmp_path,
        SYNCTRACK_DATABASE_URL=postgres_url,
        SYNCTRACK_REDIS_URL=redis_url,
        SYNCTRACK_REDIS_NAMESPACE=namespace,
        SYNCTRACK_LIVE_WINDOW="10m",
    )
    assert run_db_upgrade(env, tmp_path, 120).returncode == 0
    port = free_port()
    with ExitStack() as stack:
        web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, "web")
        stack.callback(web.stop)
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, web)
        api = stack.enter_context(httpx.Client(base_url=base, timeout=30, headers=ADMIN_HEADERS))
        yield Stack(base, api, env, tmp_path, stack)


def webhook(event_id: str, generated: datetime) -> Delivery:
    body = connection_event(event_id=event_id, connection_id=f"conn-{event_id}", company_id=f"co-{event_id}")
    body["generatedDate"] = iso(generated)
    return Delivery(event_id, json.dumps(body))


async def post_all(base: str, deliveries: list[Delivery], lanes: int = 32) -> list[int]:
    statuses: list[int] = []
    pending = list(deliveries)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def lane() -> None:
            while pending:
                delivery = pending.pop()
                answer = await client.post("/webhooks/codat", content=delivery.body, headers=signed(delivery))
                statuses.append(answer.status_code)

        await asyncio.gather(*(lane() for _ in range(lanes)))
    return statuses


def gauge(text: str, name: str, queue: str, state: str | None = None) -> float:
    labels = f'queue="{queue}"' + (f',state="{state}"' if state else "")
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{{labels}}} is not on /metrics"
    return float(found.group(1))


def test_a_live_webhook_overtakes_a_backlog_of_old_ones_and_the_queues_show_it(service: Stack) -> None:
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    backlog = [webhook(f"old-{i}", hours_ago + timedelta(seconds=i)) for i in range(BACKLOG)]
    assert asyncio.run(post_all(service.base, backlog)) == [202] * BACKLOG

    # No worker yet: everything waits on the backfill queue, nothing on the live one.
    queues = service.queues()
    assert list(queues) == ["webhooks", "backfill", "ops", "deliveries"]
    assert queues["webhooks"]["depth"] == 0 and queues["webhooks"]["oldest_age_seconds"] is None
    assert queues["backfill"]["depth"] > 0 and queues["backfill"]["oldest_age_seconds"] > 0
    assert queues["backfill"]["dead_letters"] == 0
    metrics = service.api.get("/metrics").text
    assert gauge(metrics, "synctrack_queue_depth", "backfill", "waiting") == queues["backfill"]["depth"]
    assert gauge(metrics, "synctrack_queue_oldest_age_seconds", "backfill") > 0
    assert gauge(metrics, "synctrack_queue_depth", "webhooks", "waiting") == 0
    assert gauge(metrics, "synctrack_queue_oldest_age_seconds", "webhooks") == 0

    with SseClient(f"{service.base}/v1/stream", headers=ADMIN_HEADERS) as stream:
        assert stream.status == 200
        service.start_worker()
        live = webhook("live-1", datetime.now(UTC))
        assert asyncio.run(post_all(service.base, [live])) == [202]

        old_seen: set[str] = set()
        while True:
            event_id = stream.next(timeout=60).json().get("event_id")
            if event_id == live.message_id:
                break
            if event_id in {d.message_id for d in backlog}:
                old_seen.add(event_id)
        backlog_left = service.queues()["backfill"]["depth"]
        assert len(old_seen) < BACKLOG and backlog_left > 0, "the live event waited for the whole backlog"

        def drained() -> bool:
            with psycopg.connect(service.env["SYNCTRACK_DATABASE_URL"]) as conn:
                row = conn.execute("SELECT count(*) FROM webhook_events").fetchone()
            return row is not None and row[0] == BACKLOG + 1 and service.queues()["backfill"]["depth"] == 0

        wait_for(drained, timeout=240, interval=0.5, message="the backlog drained")

    queues = service.queues()
    assert (queues["backfill"]["depth"], queues["backfill"]["oldest_age_seconds"]) == (0, None)
    assert (queues["webhooks"]["depth"], queues["webhooks"]["oldest_age_seconds"]) == (0, None)
    metrics = service.api.get("/metrics").text
    assert gauge(metrics, "synctrack_queue_depth", "backfill", "waiting") == 0
    assert gauge(metrics, "synctrack_queue_oldest_age_seconds", "backfill") == 0
