"""The Prometheus alerting rules and the Grafana dashboard in `deploy/` name only metrics `/metrics` exposes, and
the rules pass their unit tests (`deploy/prometheus/alerts_test.yml`, run by promtool)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import connection_event
from workers.ingest.handle import handle_webhook
from workers.runtime.db import make_engine, upgrade
from workers.runtime.metrics import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "synctrack.json"
METRIC = re.compile(r"\bsynctrack_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exposed_names(settings: Settings) -> set[str]:
    """Every metric name (with its sample suffixes) `/metrics` shows after one webhook was folded."""
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    handle_webhook(
        engine, None, f"msg_{uuid.uuid4().hex}", json.dumps(connection_event()), datetime.now(UTC).isoformat()
    )
    engine.dispose()
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as client:
        text = client.get("/metrics").text
    names: set[str] = set()
    # A labelled metric nothing has counted yet has no sample, and in multiprocess mode (an earlier test may
    # have set it up for this process) no family either: the definitions say what exists.
    for defined in vars(metrics()).values():
        kind, name = getattr(defined, "_type", None), getattr(defined, "_name", None)
        if isinstance(kind, str) and isinstance(name, str):
            full = name + "_total" if kind == "counter" and not name.endswith("_total") else name
            names.update({name, full, *(name + suffix for suffix in SUFFIXES.get(kind, ()))})
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_every_metric_the_alerts_and_the_dashboard_name_exists(embedded_settings: Settings) -> None:
    exposed = exposed_names(embedded_settings)
    assert "synctrack_connections_by_freshness" in exposed
    named = {name for expr in [r["expr"] for r in alert_rules()] + dashboard_exprs() for name in METRIC.findall(expr)}
    assert named, "the files name metrics"
    assert sorted(named - exposed) == []


def test_the_alerts_cover_overdue_connections_dead_letters_backlog_lag_redis_and_lost_webhooks() -> None:
    rules = alert_rules()
    by_metric = {name: rule for rule in rules for name in METRIC.findall(rule["expr"])}
    for metric in (
        "synctrack_connections_by_freshness",
        "synctrack_dead_letters",
        "synctrack_queue_depth",
        "synctrack_end_to_end_lag_seconds",
        "synctrack_redis_up",
        "synctrack_webhook_signature_failures_total",
        "synctrack_webhook_last_accepted_timestamp_seconds",
    ):
        assert metric in by_metric, metric
    for rule in rules:
        assert rule["alert"].startswith("Synctrack")
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_the_alerts_fire_as_their_promtool_unit_tests_say() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus): the alert rule tests did not run")
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_dashboard_is_grafana_json_with_a_panel_per_figure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "synctrack"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert any("synctrack_connections_by_freshness" in expr for expr in dashboard_exprs())
