"""An import started through the admin API survives its worker being killed: a new worker finishes it."""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.codat.conftest import KEY
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import (
    ServiceProcess,
    free_port,
    redis_postgres_env,
    run_db_upgrade,
    start_web_and_worker,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_an_import_on_the_workers_survives_a_killed_worker(tmp_path: Path, redis_url: str, namespace: str) -> None:
    port = free_port()
    with ExitStack() as stack, FakeCodatServer(secret=SECRET, config=Config(api_key=KEY)) as fake:
        env = {
            **redis_postgres_env(f"sqlite:///{tmp_path / 'ledger.db'}", redis_url, namespace),
            **AUTH_ENV,
            "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
            "SYNCTRACK_CODAT_BASE_URL": fake.url,
            "SYNCTRACK_CODAT_API_KEY": KEY,
            "SYNCTRACK_WORKER_HEARTBEAT_TIMEOUT_MS": "2000",
        }
        assert run_db_upgrade(env, tmp_path, timeout=60).returncode == 0
        specs = [{"platforms": ["xero"], "name": f"Existing {i}"} for i in range(8)]
        fake.control.seed(companies=specs, announce=False, initial_read=False, history=2)
        fake.control.fault("/data/history$", delay_seconds=1.5)  # every company takes a while
        _, worker = start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=ADMIN_HEADERS))

        job = api.post("/v1/admin/imports").json()

        def progress() -> dict[str, Any] | None:
            shown: dict[str, Any] = api.get(f"/v1/admin/imports/{job['id']}").json()
            return shown if shown["done"] >= 1 else None

        before = wait_for(progress, timeout=60, message="the import under way")
        assert before["status"] == "running" and before["done"] < 8
        worker.stop(signal.SIGKILL)

        replacement = ServiceProcess(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, "worker-2")
        stack.callback(replacement.stop)

        def completed() -> dict[str, Any] | None:
            shown: dict[str, Any] = api.get(f"/v1/admin/imports/{job['id']}").json()
            return shown if shown["status"] == "completed" else None

        after = wait_for(completed, timeout=120, interval=0.5, message="the import finished by the new worker")
        assert (after["total"], after["done"], after["failed"], after["connections"]) == (8, 8, 0, 8)
        companies = api.get("/v1/companies").json()["items"]
        assert len(companies) == 8
        for company in companies:
            (conn,) = api.get(f"/v1/companies/{company['id']}/connections").json()["items"]
            assert len(api.get(f"/v1/connections/{conn['id']}/syncs").json()["items"]) == 2
