"""`synctrack_event_latency_seconds{stage}` end to end: a signed webhook into real `synctrack web` and
`synctrack worker` processes, its changes read by real stream clients, every stage on `/metrics`; a replay of the
same event observes no stage (it has no receipt time)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.ops.test_metrics import Samples, parse, value
from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import BASE_TIME, SECRET, connection_event, signed_request
from tests.support.ops_support import wait_for_job
from tests.support.services import free_port, run_db_upgrade, start_web_and_worker, wait_for
from tests.support.sse_client import SseClient
from workers.runtime.metrics import LATENCY_STAGES

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

LATENCY = "synctrack_event_latency_seconds"


@pytest.fixture
def base(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[str]:
    """One web and one worker process on the real Redis and SQLite, sharing a metrics directory."""
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        **AUTH_ENV,
    }
    upgraded = run_db_upgrade(env, tmp_path, timeout=60)
    assert upgraded.returncode == 0, upgraded.stderr
    with ExitStack() as stack:
        port = free_port()
        start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        yield f"http://127.0.0.1:{port}"


def counts(samples: Samples, suffix: str = "_count", **labels: str) -> dict[str, float]:
    return {stage: value(samples, LATENCY + suffix, stage=stage, **labels) for stage in LATENCY_STAGES}


def test_a_webhook_is_observed_at_every_stage_and_each_change_once_per_web_process(base: str) -> None:
    connection_id = f"conn-{uuid.uuid4().hex[:8]}"
    minutes = (datetime.now(UTC) - BASE_TIME).total_seconds() / 60
    raw, headers = signed_request(connection_event(minutes=minutes, connection_id=connection_id))
    event_id = headers["webhook-id"]
    with httpx.Client(base_url=base, headers=ADMIN_HEADERS, timeout=10) as http:
        before = parse(http.get("/metrics").text)
        assert counts(before) == dict.fromkeys(LATENCY_STAGES, 0.0)  # every stage's series exists from the start
        with (
            SseClient(f"{base}/v1/stream", ADMIN_HEADERS) as first,
            SseClient(f"{base}/v1/stream?connection_id={connection_id}", ADMIN_HEADERS) as second,
        ):
            assert first.next().event == "snapshot" and second.next().event == "snapshot"
            assert http.post("/webhooks/codat", content=raw, headers=headers).status_code == 202
            mine = [e for e in first.take(2) if e.json().get("event_id") == event_id]
            assert [e.event for e in mine] == ["connection.updated", "sync.started"]
            assert [e.event for e in second.take(2)] == ["connection.updated", "sync.started"]
            changes = len([e for e in mine + first.drain() if e.json().get("event_id") == event_id])

            def observed() -> Samples | None:
                samples = parse(http.get("/metrics").text)
                seen = counts(samples)
                return samples if min(seen["published"], seen["delivered"]) >= changes else None

            after = wait_for(observed, timeout=10, message="the deliveries observed")

        # One event taken, committed; each of its changes published once and, with two clients in one web
        # process, delivered once.
        assert counts(after) == {"queued": 1, "committed": 1, "published": changes, "delivered": changes}
        assert counts(after, "_bucket", le="+Inf") == counts(after)
        assert counts(after, "_bucket", le="30.0") == counts(after)  # within the largest finite bucket
        assert all(0 <= seconds < 30 for seconds in counts(after, "_sum").values())

        replay = http.post("/v1/admin/replay", json={"event_id": [event_id], "rate": 0})
        assert replay.status_code == 202, replay.text
        wait_for_job(http, replay.json()["id"])
        replayed = parse(http.get("/metrics").text)
    folded = "synctrack_events_folded_total"
    assert value(replayed, folded, event_type="connection.connected", outcome="processed", replay="true") == 1
    assert counts(replayed) == counts(after)


def test_an_event_that_changes_nothing_is_observed_until_its_commit_and_has_nothing_to_publish(base: str) -> None:
    raw, headers = signed_request(connection_event("expenses.someday", connection_id=f"conn-{uuid.uuid4().hex[:8]}"))
    with httpx.Client(base_url=base, headers=ADMIN_HEADERS, timeout=10) as http:
        assert http.post("/webhooks/codat", content=raw, headers=headers).status_code == 202

        def handled() -> Samples | None:
            # Counted after its changes, if it had any, were published.
            samples = parse(http.get("/metrics").text)
            folded = value(
                samples, "synctrack_events_folded_total", event_type="other", outcome="ignored", replay="false"
            )
            return samples if folded >= 1 else None

        after = wait_for(handled, timeout=10, message="the event handled")
    assert counts(after) == {"queued": 1, "committed": 1, "published": 0, "delivered": 0}
