from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import Settings
from tests.support.auth import AUTH_SETTINGS
from tests.support.builders import SECRET
from tests.support.services import REDIS_URL, fresh_postgres_database, postgres_unavailable, redis_unavailable


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis; the test gets a namespace of its own (see `namespace`)."""
    reason = redis_unavailable()
    if reason:
        pytest.skip(reason)
    yield REDIS_URL


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    ns = f"synctrack-test-{uuid.uuid4().hex[:10]}"
    yield ns
    if redis_unavailable() is None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{ns}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Runs the test once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def embedded_settings(sqlite_url: str) -> Settings:
    """Settings of the embedded default, with a fresh in-process Redis per test, and the test admin token
    (`tests/support/auth.py`: send `ADMIN_HEADERS` to `/v1/*`)."""
    import fakeredis

    import workers.runtime.broker as broker

    broker._embedded_server = fakeredis.FakeServer()
    return Settings(
        embedded=True,
        database_url=sqlite_url,
        webhook_secrets=[SECRET],
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        _env_file=None,
        **AUTH_SETTINGS,  # type: ignore[arg-type]
    )
