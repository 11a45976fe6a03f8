"""The Codat tests' shared fixture: a real `synctrack dev` wired to a fake Codat on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import ServiceProcess, free_port, wait_until_healthy

KEY = "reconcile-key"


DevAndFake = tuple[httpx.Client, FakeCodatServer, dict[str, str]]


@contextmanager
def dev_beside_fake(tmp_path: Path, redis_url: str, namespace: str, **extra_env: str) -> Iterator[DevAndFake]:
    """`synctrack dev` wired to a fake Codat (with its API key), `extra_env` added to its settings; the admin API
    client, the fake and the environment the service runs with."""
    port = free_port()
    config = Config(sync_seconds=0.4, api_key=KEY)
    with FakeCodatServer(receiver_url=f"http://127.0.0.1:{port}/webhooks/codat", secret=SECRET, config=config) as fake:
        env = {
            "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
            "SYNCTRACK_RECONCILE_EVERY": "0",  # only the calls a test makes reach Codat
            "SYNCTRACK_REDIS_URL": redis_url,
            "SYNCTRACK_REDIS_NAMESPACE": namespace,
            **AUTH_ENV,
            **extra_env,
        }
        dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", dev)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=ADMIN_HEADERS) as api:
                yield api, fake, env
        finally:
            dev.stop()


@pytest.fixture
def dev_and_fake(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[DevAndFake]:
    with dev_beside_fake(tmp_path, redis_url, namespace) as running:
        yield running
