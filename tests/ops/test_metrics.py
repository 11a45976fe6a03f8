"""`/metrics` after a known workload: in one process, and merged across real web and worker processes
(prometheus multiprocess mode). Also the label rules, the metrics directory, and JSON log lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import OTHER_SECRET, SECRET, connection_event, read_completed
from tests.support.ops_support import admin_client, ops_settings
from tests.support.services import ServiceProcess, free_port, run_cli, wait_for, wait_until_healthy
from tests.support.workload import Delivery, signed
from workers.runtime.db import upgrade
from workers.runtime.logs import JsonFormatter
from workers.runtime.metrics import (
    LAST_ACCEPTED,
    MULTIPROC_ENV,
    event_type_label,
    forget_dead_processes,
    prepare_multiprocess_dir,
    record_codat_call,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def workload() -> list[tuple[Delivery, dict[str, str], int]]:
    """6 accepted (4 connection.connected, 2 read.completed), 2 duplicates, 3 bad signatures, 1 bad envelope."""
    accepted = [Delivery(f"msg_c{i}", json.dumps(connection_event(connection_id=f"c{i}"))) for i in range(4)]
    accepted += [Delivery(f"msg_r{i}", json.dumps(read_completed(connection_id=f"c{i}"))) for i in range(2)]
    bad = Delivery("msg_bad", json.dumps({"hello": "world"}))
    sends = [(d, signed(d), 202) for d in accepted]
    sends += [(d, signed(d), 200) for d in accepted[:2]]
    sends += [(accepted[0], signed(accepted[0], secret=OTHER_SECRET), 401) for _ in range(3)]
    sends.append((bad, signed(bad), 400))
    return sends


def check_webhook_counters(after: Samples, before: Samples | None = None) -> None:
    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - (value(before, name, **labels) if before else 0.0)

    received = "synctrack_webhooks_received_total"
    assert delta(received, event_type="connection.connected", result="accepted", reason="") == 4
    assert delta(received, event_type="read.completed", result="accepted", reason="") == 2
    assert delta(received, event_type="connection.connected", result="duplicate", reason="") == 2
    assert delta(received, event_type="unknown", result="rejected", reason="invalid_signature") == 3
    assert delta(received, event_type="unknown", result="rejected", reason="invalid_envelope") == 1
    assert delta("synctrack_webhook_signature_failures_total", reason="invalid_signature") == 3


@pytest.mark.redis
def test_a_scrape_counts_every_answer_of_the_receiver_and_reads_the_queue(
    sqlite_url: str, redis_url: str, namespace: str
) -> None:
    settings = ops_settings(sqlite_url, redis_url, namespace)
    with admin_client(settings) as client:
        before = parse(client.get("/metrics").text)
        for delivery, headers, status in workload():
            assert client.post("/webhooks/codat", content=delivery.body, headers=headers).status_code == status
        scrape = client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    after = parse(scrape.text)
    check_webhook_counters(after, before)
    lanes = [value(after, "synctrack_queue_depth", queue=q, state="waiting") for q in ("webhooks", "backfill")]
    assert sum(lanes) == 6  # no worker in this test
    assert value(after, "synctrack_dead_letters") == 0
    assert value(after, "synctrack_redis_up") == 1


def test_an_accepted_webhook_sets_the_time_of_the_last_acceptance_and_a_refused_one_does_not(
    embedded_settings: Settings,
) -> None:
    upgrade(embedded_settings.database_url)
    delivery = Delivery(f"msg_{uuid.uuid4().hex}", json.dumps(connection_event()))
    with TestClient(create_app(embedded_settings), headers=ADMIN_HEADERS) as client:

        def last_accepted() -> float:
            return value(parse(client.get("/metrics").text), LAST_ACCEPTED)

        earlier = last_accepted()
        refused = client.post("/webhooks/codat", content=delivery.body, headers=signed(delivery, secret=OTHER_SECRET))
        assert refused.status_code == 401
        assert last_accepted() == earlier
        sent = time.time()
        accepted = client.post("/webhooks/codat", content=delivery.body, headers=signed(delivery))
        assert accepted.status_code == 202
        assert sent <= last_accepted() <= time.time()


ACCEPT_ONE = """
import time
from workers.runtime.metrics import record_webhook
started = time.time()
record_webhook("read.completed", "accepted")
print(started, time.time())
"""
SCRAPE = "import sys; from service.api.metrics_endpoint import render; sys.stdout.write(render(None).decode())"


def test_the_time_of_the_last_acceptance_is_the_latest_over_every_process(tmp_path: Path) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}

    def python(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = [float(t) for t in python(ACCEPT_ONE).split()]
    second = [float(t) for t in python(ACCEPT_ONE).split()]
    assert first[1] < second[0]
    merged = value(parse(python(SCRAPE)), LAST_ACCEPTED)  # the scraping process accepted nothing: its own is 0
    assert second[0] <= merged <= second[1]


def test_codat_calls_are_counted_by_status_with_bounded_labels() -> None:
    def count(status: str) -> float:
        return REGISTRY.get_sample_value("synctrack_codat_api_calls_total", {"status": status}) or 0.0

    before = {s: count(s) for s in ("200", "429", "timeout", "error")}
    for status in (200, 200, 429, "timeout", "connection reset", 9999):
        record_codat_call(status)
    assert {s: count(s) - before[s] for s in before} == {"200": 2, "429": 1, "timeout": 1, "error": 2}


def test_only_known_event_types_become_labels() -> None:
    assert event_type_label("read.completed") == "read.completed"
    assert event_type_label("Data sync completed") == "Data sync completed"
    assert event_type_label("invoices.write.successful") == "other"
    assert event_type_label(None) == event_type_label("unknown") == "unknown"


def test_the_metrics_directory_defaults_per_namespace_and_forgets_dead_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    directory = tmp_path / "synctrack-metrics-ns1"
    directory.mkdir()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    alive = os.getpid()

    def files(*names: str) -> set[str]:
        for name in names:
            (directory / name).write_bytes(b"")
        return {p.name for p in directory.iterdir()}

    files(f"counter_{dead}.db", f"gauge_livesum_{dead}.db", f"counter_{alive}.db", f"gauge_livesum_{alive}.db")
    # A scrape forgets a dead process's live gauges only; its counters still count.
    assert forget_dead_processes(str(directory)) == 1
    assert files() == {f"counter_{alive}.db", f"counter_{dead}.db", f"gauge_livesum_{alive}.db"}
    # A starting process clears everything of dead processes, so restarts do not pile up files.
    assert prepare_multiprocess_dir("ns1") == str(directory) == os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert files() == {f"counter_{alive}.db", f"gauge_livesum_{alive}.db"}


def test_json_log_lines_keep_quoted_values_whole() -> None:
    record = logging.LogRecord(
        "synctrack.worker", logging.WARNING, __file__, 1, "event=%s company=%s connection=%s error=%r", None, None
    )
    record.args = ("msg_1", "co_1", "cn_1", "needs payload.connection with a string id")
    line = json.loads(JsonFormatter().format(record))
    assert (line["event"], line["company"], line["connection"]) == ("msg_1", "co_1", "cn_1")
    assert line["error"] == "needs payload.connection with a string id"


@contextmanager
def web_and_worker(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    upgraded = run_cli(["db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    port = free_port()
    with ExitStack() as stack:
        web = ServiceProcess(
            ["web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], env, tmp_path, "web"
        )
        stack.callback(web.stop)
        worker = ServiceProcess(["worker", "--processes", "2", "--threads", "2"], env, tmp_path, "worker")
        stack.callback(worker.stop)
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, web)
        yield base


@pytest.mark.redis
@pytest.mark.e2e
def test_metrics_are_merged_across_web_and_worker_processes(tmp_path: Path, redis_url: str, namespace: str) -> None:
    metrics_dir = tmp_path / "prometheus"
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with web_and_worker(tmp_path, env) as base, httpx.Client(base_url=base, timeout=10) as http:
        sending = time.time()
        for delivery, headers, status in workload():
            assert http.post("/webhooks/codat", content=delivery.body, headers=headers).status_code == status
        sent = time.time()

        def folded() -> Samples | None:
            samples = parse(http.get("/metrics").text)
            total = sum(v for (name, _), v in samples.items() if name == "synctrack_events_folded_total")
            return samples if total >= 6 else None

        wait_for(folded, timeout=30, message="six events folded")
        # Every scrape — whichever web process answers it — sees the sum over all processes.
        scrapes = [parse(http.get("/metrics").text) for _ in range(6)]
    assert len({p.name for p in metrics_dir.iterdir() if p.name.startswith("counter_")}) >= 2
    for samples in scrapes:
        check_webhook_counters(samples)
        assert (
            value(
                samples,
                "synctrack_events_folded_total",
                event_type="connection.connected",
                outcome="processed",
                replay="false",
            )
            == 4
        )
        assert (
            value(
                samples,
                "synctrack_events_folded_total",
                event_type="read.completed",
                outcome="processed",
                replay="false",
            )
            == 2
        )
        assert value(samples, "synctrack_fold_duration_seconds_count") == 6
        for queue in ("webhooks", "backfill"):
            assert value(samples, "synctrack_queue_depth", queue=queue, state="waiting") == 0
            assert value(samples, "synctrack_queue_oldest_age_seconds", queue=queue) == 0
        assert value(samples, "synctrack_dead_letters") == 0
        assert value(samples, "synctrack_end_to_end_lag_seconds") > 0
        assert sending <= value(samples, LAST_ACCEPTED) <= sent
