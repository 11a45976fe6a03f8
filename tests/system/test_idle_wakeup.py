"""An idle worker waits on Redis, not on a clock: a webhook posted to an idle stack is taken and folded at once,
however far apart its workers would look at their queues by themselves (`SYNCTRACK_WORKER_POLL_MS`), with
`synctrack web` + `synctrack worker` on the real Redis and with `synctrack dev` on its in-process one."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET
from tests.support.services import (
    ServiceProcess,
    free_port,
    run_db_upgrade,
    start_web_and_worker,
    wait_for,
    wait_until_healthy,
)
from tests.support.workload import Delivery, signed, webhook_mix

pytestmark = pytest.mark.e2e

LOOK_APART_MS = "10000"
"""How far apart an idle worker would look at its queues by itself, were it not woken."""
IDLE_SECONDS = 8.0
"""How long the stack idles before each webhook: a worker that slept between looks would sleep for seconds by now."""
PROMPT_SECONDS = 1.5
"""Well under `LOOK_APART_MS`: the most from the POST to the event readable as stored and folded."""


def fold_seconds(base: str, delivery: Delivery) -> float:
    """POST one signed webhook; seconds until the API shows it stored (stored and folded are one transaction)."""
    started = time.monotonic()
    answer = httpx.post(f"{base}/webhooks/codat", content=delivery.body, headers=signed(delivery), timeout=10)
    assert answer.status_code == 202, answer.text
    with httpx.Client(base_url=base, headers=ADMIN_HEADERS, timeout=10) as client:
        wait_for(
            lambda: client.get(f"/v1/events/{delivery.message_id}").status_code == 200,
            timeout=30,
            interval=0.01,
            message=f"event {delivery.message_id} stored",
        )
    return time.monotonic() - started


def folds_after_idling(base: str, rounds: int = 3) -> list[float]:
    """Let the stack idle, post one webhook, time its fold; `rounds` times."""
    times = []
    for delivery in webhook_mix(rounds, companies=1, hot_companies=1, seed=5):
        time.sleep(IDLE_SECONDS)
        times.append(fold_seconds(base, delivery))
    return times


@pytest.mark.redis
def test_an_idle_worker_process_folds_a_webhook_at_once_whatever_its_poll_interval(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    env = {
        **AUTH_ENV,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_WORKER_POLL_MS": LOOK_APART_MS,
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    port = free_port()
    with ExitStack() as stack:
        _, worker = start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        wait_for(lambda: "result=ready" in worker.output(), timeout=60, message="the worker ready")
        times = folds_after_idling(f"http://127.0.0.1:{port}")
    assert max(times) < PROMPT_SECONDS, times


def test_synctrack_dev_folds_a_webhook_at_once_after_idling(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **AUTH_ENV,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_REDIS_URL": "redis://127.0.0.1:1/0",
        "SYNCTRACK_WORKER_POLL_MS": LOOK_APART_MS,
    }
    dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, dev)
        times = folds_after_idling(base)
    finally:
        dev.stop()
    assert max(times) < PROMPT_SECONDS, times
