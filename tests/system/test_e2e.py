"""End to end over real HTTP and real processes: `synctrack web` + `synctrack worker` on the real Redis and
PostgreSQL, and `synctrack dev` on its embedded default. A realistic, shuffled stream with duplicates goes in;
the API, read until it settles, must equal the fold of what was stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.events import parse_event, parse_time
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import (
    ServiceProcess,
    free_port,
    redis_postgres_env,
    run_cli,
    start_web_and_worker,
    wait_for,
    wait_until_healthy,
)
from tests.support.workload import Delivery, signed, webhook_mix
from workers.ledger.memory import MemoryLedger

pytestmark = pytest.mark.e2e


@contextmanager
def web_and_workers(tmp_path: Path, env: dict[str, str], worker_processes: int = 2) -> Iterator[str]:
    env = {**AUTH_ENV, **env}
    port = free_port()
    upgraded = run_cli(["db", "upgrade"], env, tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    with ExitStack() as stack:
        start_web_and_worker(stack, env, tmp_path, port, processes=worker_processes, threads=2)
        yield f"http://127.0.0.1:{port}"


def post_all(base: str, deliveries: list[Delivery]) -> list[int]:
    with httpx.Client(base_url=base, timeout=30) as client:

        def post(delivery: Delivery) -> int:
            return client.post("/webhooks/codat", content=delivery.body, headers=signed(delivery)).status_code

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(post, deliveries))


def all_pages(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    url = f"{path}{'&' if '?' in path else '?'}limit=500"
    while True:
        body = client.get(url).json()
        items.extend(body["items"])
        if not body["next_cursor"]:
            return items
        url = f"{path}{'&' if '?' in path else '?'}limit=500&cursor={body['next_cursor']}"


def expected_ledger(client: httpx.Client, stored: list[dict[str, Any]]) -> MemoryLedger:
    """Fold what the service stored, in memory, in the order it arrived."""
    ledger = MemoryLedger()
    for meta in sorted(stored, key=lambda e: (e["received_at"], e["id"])):
        body = client.get(f"/v1/events/{meta['id']}").json()["body"]
        event = parse_event(json.dumps(body), meta["id"], parse_time(meta["received_at"]))
        if event.known:
            ledger.apply(event)
    return ledger


def assert_api_matches(base: str, deliveries: list[Delivery]) -> None:
    unique = {d.message_id for d in deliveries}
    with httpx.Client(base_url=base, timeout=30, headers=ADMIN_HEADERS) as client:
        stored = wait_for(
            lambda: (items := all_pages(client, "/v1/events")) and len(items) == len(unique) and items,
            timeout=90,
            interval=0.5,
            message=f"all {len(unique)} events stored",
        )
        assert {e["id"] for e in stored} == unique
        assert {e["outcome"] for e in stored} <= {"processed", "ignored"}
        expected = expected_ledger(client, stored)
        companies = all_pages(client, "/v1/companies")
        seen = 0
        for company in companies:
            for conn in all_pages(client, f"/v1/companies/{company['id']}/connections"):
                want = expected.connections[conn["id"]]
                assert conn["status"] == want.status
                assert parse_or_none(conn["last_sync_at"]) == want.last_sync_at
                assert parse_or_none(conn["first_sync_at"]) == want.first_sync_at
                assert conn["last_sync_status"] == want.last_sync_status
                assert conn["platform_name"] == want.platform_name
                syncs = all_pages(client, f"/v1/connections/{conn['id']}/syncs")
                want_syncs = {s.id: s for s in expected.sync_rows().values() if s.connection_id == conn["id"]}
                assert {s["id"]: s["phase"] for s in syncs} == {k: v.phase for k, v in want_syncs.items()}
                assert conn["sync_active"] == any(s.phase == "active" for s in want_syncs.values())
                seen += 1
        assert seen == len(expected.connections)


def parse_or_none(value: str | None) -> Any:
    return parse_time(value) if value else None


@pytest.mark.redis
@pytest.mark.postgres
def test_web_and_worker_processes_on_redis_and_postgres_settle_to_the_fold(
    tmp_path: Path, redis_url: str, namespace: str, postgres_url: str
) -> None:
    env = {**redis_postgres_env(postgres_url, redis_url, namespace), "SYNCTRACK_WEBHOOK_SECRETS": SECRET}
    deliveries = webhook_mix(400, duplicate_share=0.1, companies=3, hot_companies=1, hot_share=0.8, seed=7)
    with web_and_workers(tmp_path, env) as base:
        statuses = post_all(base, deliveries)
        assert set(statuses) <= {200, 202}
        assert statuses.count(202) == len({d.message_id for d in deliveries})
        assert_api_matches(base, deliveries)


@pytest.mark.redis
def test_web_and_worker_processes_on_sqlite_settle_to_the_fold(tmp_path: Path, redis_url: str, namespace: str) -> None:
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
    }
    deliveries = webhook_mix(200, duplicate_share=0.1, companies=3, hot_companies=1, seed=11)
    with web_and_workers(tmp_path, env) as base:
        post_all(base, deliveries)
        assert_api_matches(base, deliveries)


def test_synctrack_dev_runs_everything_in_one_process(tmp_path: Path) -> None:
    port = free_port()
    env = {**AUTH_ENV, "SYNCTRACK_WEBHOOK_SECRETS": SECRET, "SYNCTRACK_REDIS_URL": "redis://127.0.0.1:1/0"}
    dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, dev)
        assert f"http://127.0.0.1:{port}" in dev.output()
        assert str(tmp_path / "synctrack.db") in dev.output()
        deliveries = webhook_mix(150, duplicate_share=0.1, companies=2, hot_companies=1, seed=3)
        statuses = post_all(base, deliveries)
        assert statuses.count(200) == len(deliveries) - len({d.message_id for d in deliveries})
        assert_api_matches(base, deliveries)
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
    finally:
        dev.stop()
    assert (tmp_path / "synctrack.db").exists()


@pytest.mark.redis
def test_production_processes_refuse_an_out_of_date_schema(tmp_path: Path, redis_url: str, namespace: str) -> None:
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
    }
    web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(free_port())], env, tmp_path, "web")
    worker = ServiceProcess(["worker", "--processes", "1", "--threads", "1"], env, tmp_path, "worker")
    try:
        for proc in (web, worker):
            wait_for(lambda p=proc: "synctrack db upgrade" in p.output(), timeout=30, message="schema refusal")
    finally:
        web.stop()
        worker.stop()


@pytest.mark.redis
@pytest.mark.postgres
def test_two_worker_processes_folding_one_connection_lose_no_update(
    tmp_path: Path, redis_url: str, namespace: str, postgres_url: str
) -> None:
    from tests.support.builders import CONNECTION, iso, read_completed

    env = {**redis_postgres_env(postgres_url, redis_url, namespace), "SYNCTRACK_WEBHOOK_SECRETS": SECRET}
    bodies = [read_completed([(f"type{i:03d}", "Complete")], minutes=i) for i in range(300)]
    deliveries = [Delivery(f"msg_{i}", json.dumps(body)) for i, body in enumerate(bodies)]
    with web_and_workers(tmp_path, env, worker_processes=2) as base:
        assert set(post_all(base, deliveries)) == {202}
        with httpx.Client(base_url=base, headers=ADMIN_HEADERS) as client:
            wait_for(lambda: len(all_pages(client, "/v1/events")) == 300, timeout=60, message="300 events stored")
            conn = client.get(f"/v1/connections/{CONNECTION}").json()
    assert len(conn["data_types"]) == 300
    assert conn["last_sync_at"] == iso(max(parse_time(b["generatedDate"]) for b in bodies))
    assert conn["first_sync_at"] == iso(min(parse_time(b["generatedDate"]) for b in bodies))
