"""Tools for the operations tests: settings on the real Redis, a real dramatiq worker in this process, a
stored stream of realistic webhooks, and the admin API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import dramatiq
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from schemas.settings import Settings
from service.app import create_app
from service.cli import app as cli_app
from service.security.tokens import hash_token
from tests.support.builders import SECRET
from tests.support.services import wait_for
from tests.support.workload import Delivery
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.ledger.tables import WebhookEvent
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import build_worker
from workers.runtime.db import make_engine, upgrade

ADMIN_TOKEN = "synctrack-ops-test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def admin_client(settings: Settings) -> TestClient:
    """A test client of the whole app, authenticated as an admin (use it as a context manager)."""
    return TestClient(create_app(settings), headers=ADMIN)


def ops_settings(database_url: str, redis_url: str, namespace: str, **changes: Any) -> Settings:
    """Settings on the real Redis with quick retries: 2 retries, 50–200 ms apart."""
    upgrade(database_url)
    base = Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_namespace=namespace,
        webhook_secrets=[SECRET],
        worker_max_retries=2,
        worker_min_backoff_ms=50,
        worker_max_backoff_ms=200,
        admin_token_hashes=[hash_token(ADMIN_TOKEN)],
        _env_file=None,
    )
    return base.model_copy(update=changes)


def store(settings: Settings, deliveries: list[Delivery], received_at: datetime | None = None) -> list[str]:
    """Store and fold deliveries through the workers' own function, in batches; return their ids."""
    engine = make_engine(settings.database_url)
    at = (received_at or datetime.now(UTC)).isoformat()
    requests = [FoldRequest(d.message_id, d.body, at) for d in deliveries]
    for start in range(0, len(requests), 200):
        handle_webhooks(engine, None, requests[start : start + 200])
    engine.dispose()
    return [d.message_id for d in deliveries]


def processed_since(settings: Settings, since: datetime) -> int:
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        count = len(session.exec(select(WebhookEvent.id).where(col(WebhookEvent.processed_at) >= since)).all())
    engine.dispose()
    return count


@contextmanager
def running_worker(settings: Settings, threads: int = 4) -> Iterator[WorkerRuntime]:
    """A real dramatiq worker (all of Synctrack's actors) on the real Redis, in this process."""
    broker, runtime = build_worker(settings)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        yield runtime
    finally:
        worker.stop(timeout=10_000)
        runtime.close()


def cli(settings: Settings, *args: str) -> Result:
    """Run `synctrack …` in this process with `settings` as its environment."""
    env = {
        "SYNCTRACK_DATABASE_URL": settings.database_url,
        "SYNCTRACK_REDIS_URL": settings.redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": settings.redis_namespace,
    }
    return CliRunner().invoke(cli_app, list(args), env=env, catch_exceptions=False)


def wait_for_job(client: Any, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Poll the admin API until the replay is completed and every replayed event was handled."""

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/admin/replays/{job_id}").json()
        settled = job["status"] == "completed" and job["folded"] + job["dead_lettered"] >= job["total"]
        return job if settled else None

    result: dict[str, Any] = wait_for(finished, timeout=timeout, message=f"replay {job_id} finished")
    return result


def new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"
