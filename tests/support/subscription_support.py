"""Builders for subscription tests: settings that allow a local receiver, rows, stream changes, and the
fixtures the worker-side tests share (settings on SQLite or PostgreSQL, an engine, a Redis client)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session

from schemas.settings import Settings
from tests.support.auth import AUTH_ENV, AUTH_SETTINGS
from tests.support.builders import SECRET, signed_request
from workers.ledger.changes import stream_key
from workers.ledger.tables import Subscription
from workers.outbound.signing import new_secret
from workers.runtime.broker import sync_redis
from workers.runtime.db import make_engine, upgrade
from workers.runtime.delivery_queue import DELIVERY_QUEUE
from workers.runtime.redis_queues import queued_messages

FAST_RETRIES = {
    "subscriptions_allow_http": True,
    "subscriptions_allow_private": True,
    "subscriptions_timeout_seconds": 1.0,
    "subscriptions_retry_min_seconds": 0.2,
    "subscriptions_retry_max_seconds": 1.0,
    "subscriptions_retry_window_seconds": 30.0,
}
"""What tests change: a local receiver is allowed, and retries take seconds instead of a day."""

FAST_RETRIES_ENV = {f"SYNCTRACK_{key.upper()}": str(value).lower() for key, value in FAST_RETRIES.items()}


def fast_settings(settings: Settings, **changes: Any) -> Settings:
    """`settings` with fast retries, a local receiver allowed, and the test admin token accepted."""
    return settings.model_copy(update={**AUTH_SETTINGS, **FAST_RETRIES, **changes})


@pytest.fixture(name="settings")
def settings_fixture(request: pytest.FixtureRequest, embedded_settings: Settings) -> Settings:
    """SQLite; PostgreSQL too for the tests marked `BOTH_DATABASES`."""
    url = embedded_settings.database_url
    if getattr(request, "param", "sqlite") == "postgres":
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    return fast_settings(embedded_settings, database_url=url)


BOTH_DATABASES = pytest.mark.parametrize("settings", ["sqlite", "postgres"], indirect=True)


@pytest.fixture(name="engine")
def engine_fixture(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture(name="redis")
def redis_fixture(settings: Settings) -> Redis:
    return sync_redis(settings)


def add_subscription(
    engine: Engine,
    url: str,
    *,
    event_types: list[str] | None = None,
    company_ids: list[str] | None = None,
    created_at: datetime | None = None,
    **fields: Any,
) -> Subscription:
    at = created_at or datetime.now(UTC) - timedelta(minutes=1)
    row = Subscription(
        id=f"sub_{uuid.uuid4().hex}",
        url=url,
        event_types=event_types or ["*"],
        company_ids=company_ids,
        secret=new_secret(),
        created_at=at,
        updated_at=at,
        **fields,
    )
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return row


def publish_change(
    redis: Redis, namespace: str, event: str = "sync.completed", company_id: str = "company-1", **data: Any
) -> str:
    """XADD one change as the change feed would; returns its stream id."""
    body = {"id": f"sync-{uuid.uuid4().hex[:8]}", "company_id": company_id, "event_id": "evt-1", **data}
    fields = {"event": event, "company_id": company_id, "connection_id": "conn-1", "data": json.dumps(body)}
    entry = redis.xadd(stream_key(namespace), fields)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def stream_entries(redis: Redis, namespace: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the change stream, oldest first."""
    entries: Any = redis.xrange(stream_key(namespace))
    return list(entries)


def queued_ids(redis: Redis, namespace: str, *, delayed: bool = False) -> list[str]:
    """The delivery ids of the delivery messages waiting on the deliveries queue (its delay queue if `delayed`),
    in order."""
    found: list[str] = []
    for message in queued_messages(redis, namespace, DELIVERY_QUEUE, delayed=delayed):
        argument = message.args[0]
        found.extend(argument if isinstance(argument, list) else [argument])
    return found


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of `synctrack` processes under test: SQLite in `tmp_path`, tokens, fast retries."""
    return {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **AUTH_ENV,
        **FAST_RETRIES_ENV,
        **extra,
    }


def dispatcher_ready(client: redis.Redis, namespace: str) -> bool:
    """True once a worker's outbound dispatcher reads the change feed (its consumer group exists)."""
    try:
        groups: Any = client.xinfo_groups(f"{namespace}:changes")
        return any(g["name"] == b"subscriptions" for g in groups)
    except redis.ResponseError:
        return False


def subscribe(client: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    """Create a subscription through the API; its body (with the secret)."""
    response = client.post("/v1/subscriptions", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def post_webhook(client: httpx.Client, body: dict[str, Any], msg_id: str | None = None) -> None:
    """Deliver a signed webhook like Codat does; it must be accepted (or a duplicate)."""
    raw, headers = signed_request(body, msg_id=msg_id)
    assert client.post("/webhooks/codat", content=raw, headers=headers).status_code in (200, 202)
