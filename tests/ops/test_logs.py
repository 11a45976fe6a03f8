"""Log lines cannot be forged, and no webhook body reaches one — dramatiq's own lines included.

The forger sends a request whose value ends up in a log line (an `X-Forwarded-For` hop believed from
a trusted proxy, logged when the source runs out of failure budget). The body test runs a real
`synctrack web` and `synctrack worker` at DEBUG on the real PostgreSQL and Redis, with the ledger's
table renamed away so every attempt to fold fails and dramatiq logs the message at ERROR.
"""

from __future__ import annotations

import io
import json
import logging
import shlex
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import AUTH_ENV, bearer
from tests.support.builders import SECRET, connection_event, iso, signed_request
from tests.support.services import free_port, redis_postgres_env, run_db_upgrade, start_web_and_worker, wait_for
from workers.runtime.db import upgrade
from workers.runtime.logs import log_handler

FORGED = "203.0.113.9 level=critical logger=synctrack.admin msg=admin_token_leaked ts=2020-01-01T00:00:00Z"


@contextmanager
def captured(settings: Settings) -> Iterator[io.StringIO]:
    """What the process's log handler writes while the block runs."""
    buffer = io.StringIO()
    handler = log_handler(settings, buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def rate_limited_line(settings: Settings) -> str:
    """Fail authentication twice from the forged forwarded source; the log line that says it was limited."""
    app = create_app(settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"], "failure_limit_per_minute": 1}))
    with captured(settings) as buffer, TestClient(app, client=("127.0.0.1", 4000)) as client:
        for _ in range(2):
            headers = {**bearer("sta_not-a-known-token-0123456789abcdef"), "X-Forwarded-For": FORGED}
            assert client.get("/v1/companies", headers=headers).status_code in (401, 429)
    (line,) = [line for line in buffer.getvalue().splitlines() if "source_rate_limited" in line]
    return line


def kv_fields(line: str) -> list[tuple[str, str]]:
    """The key=value pairs of a kv line, read as a shell would split it (quoted values stay whole)."""
    return [tuple(token.split("=", 1)) for token in shlex.split(line) if "=" in token]  # type: ignore[misc]


def test_a_value_from_a_request_cannot_add_fields_to_a_kv_line(embedded_settings: Settings) -> None:
    upgrade(embedded_settings.database_url)
    line = rate_limited_line(embedded_settings)
    fields = kv_fields(line)
    keys = [key for key, _ in fields]
    assert keys.count("level") == 1 and keys.count("logger") == 1 and keys.count("ts") == 1, line
    assert dict(fields)["level"] == "warning" and dict(fields)["logger"] == "synctrack.auth"
    assert dict(fields)["source"] == FORGED
    assert "\n" not in line


def test_a_value_from_a_request_cannot_overwrite_the_fixed_keys_of_a_json_line(embedded_settings: Settings) -> None:
    upgrade(embedded_settings.database_url)
    settings = embedded_settings.model_copy(update={"log_format": "json"})
    body = json.loads(rate_limited_line(settings))
    assert (body["level"], body["logger"]) == ("warning", "synctrack.auth")
    assert not body["ts"].startswith("2020")
    assert body["source"] == FORGED


def test_a_message_naming_the_fixed_keys_cannot_overwrite_them_in_json() -> None:
    record = logging.LogRecord("synctrack.x", logging.INFO, __file__, 1, "ts=%s level=%s logger=%s msg=hi", None, None)
    record.args = ("2020-01-01", "critical", "synctrack.admin")
    handler = log_handler(Settings(log_format="json", _env_file=None))
    body = json.loads(handler.format(record))
    assert (body["level"], body["logger"]) == ("info", "synctrack.x")
    assert (body["_ts"], body["_level"], body["_logger"]) == ("2020-01-01", "critical", "synctrack.admin")


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.redis
def test_a_failing_message_carrying_a_body_leaves_the_body_out_of_every_log_line(
    tmp_path: Path, postgres_url: str, redis_url: str, namespace: str
) -> None:
    marker = f"BODY-MARKER-{uuid.uuid4().hex}"
    env = {
        **AUTH_ENV,
        **redis_postgres_env(postgres_url, redis_url, namespace),
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_LOG_LEVEL": "DEBUG",
        "SYNCTRACK_WORKER_MIN_BACKOFF_MS": "100",
        "SYNCTRACK_WORKER_MAX_BACKOFF_MS": "200",
        "SYNCTRACK_WORKER_MAX_RETRIES": "2",
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    event = connection_event(company_id=str(uuid.uuid4()), connection_id=str(uuid.uuid4()))
    event["payload"]["referenceCompany"]["name"] = marker
    event["payload"]["connection"]["connectionInfo"] = {"note": marker}
    event["generatedDate"] = iso(datetime.now(UTC))  # a live webhook: `fold_webhooks` on the live queue
    port = free_port()
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with ExitStack() as stack:
        web, worker = start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE webhook_events RENAME TO webhook_events_away")
        body, headers = signed_request(event)
        response = httpx.post(f"http://127.0.0.1:{port}/webhooks/codat", content=body, headers=headers, timeout=10)
        assert response.status_code == 202
        wait_for(lambda: worker.output().count("Failed to process message") >= 2, timeout=60, message="failed attempts")
        wait_for(lambda: "Received message" in worker.output(), timeout=5, message="dramatiq's DEBUG receipt")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE webhook_events_away RENAME TO webhook_events")
    logs = worker.output() + web.output()
    assert "webhook_events" in logs, "the failure itself is logged"
    assert marker not in logs
    assert "Failed to process message fold_webhook" in logs
