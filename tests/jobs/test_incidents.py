"""The incident check over a real ledger (SQLite and PostgreSQL): webhooks folded as a worker folds them, then the
check the workers run at fold time and periodically — what does not open an incident, the clock closing one, each
change announced once, and the same incidents found again from the ledger alone."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlmodel import Session, col, delete, select

from schemas.json_codec import loads
from schemas.settings import Settings
from tests.support.builders import BASE_TIME, connection_event, read_completed
from tests.support.ledger_fill import fold_webhooks
from workers.codat.system_refresh import INCIDENT_REFRESH_JOB, refresh_interval
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.jobs.incidents import INCIDENT_JOB, incident_interval, run_incident_check
from workers.ledger.changes import ChangeFeed, stream_key
from workers.ledger.tables import PlatformIncident
from workers.ledger.views import load_connection
from workers.ledger.worker_runtime import WorkerRuntime
from workers.main import periodic_jobs
from workers.runtime.db import make_engine, upgrade

pytestmark = pytest.mark.redis

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
"""The outages below happen an hour ago; each check is given its own `now`."""


def minutes(m: float) -> float:
    """The builders' `minutes` of START plus `m` minutes."""
    return (START - BASE_TIME).total_seconds() / 60 + m


def moment(m: float) -> datetime:
    return START + timedelta(minutes=m)


@pytest.fixture
def runtime(database_url: str, redis_url: str, namespace: str) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    settings = Settings(database_url=database_url, redis_url=redis_url, redis_namespace=namespace, _env_file=None)
    engine = make_engine(database_url)
    client = redis.Redis.from_url(redis_url)
    yield WorkerRuntime(settings, engine, ChangeFeed(client, namespace, 10_000))
    engine.dispose()


def link(runtime: WorkerRuntime, connections: dict[str, str], platform: tuple[str, str] = ("dfxm", "Xero")) -> None:
    bodies = []
    for conn, company in connections.items():
        body = connection_event(connection_id=conn, company_id=company, platform=platform[1], minutes=minutes(-30))
        body["payload"]["connection"]["integrationKey"] = platform[0]
        bodies.append(body)
    fold_webhooks(runtime.engine, *bodies)


def fail(runtime: WorkerRuntime, connections: dict[str, str], at: float, status: str = "FetchError") -> None:
    fold_webhooks(
        runtime.engine,
        *(
            read_completed([("invoices", status)], connection_id=conn, company_id=company, minutes=minutes(at))
            for conn, company in connections.items()
        ),
    )


def spread(count: int, companies: int) -> dict[str, str]:
    return {f"conn-{i}": f"company-{i % companies}" for i in range(count)}


def announced(runtime: WorkerRuntime) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, company_id, data) of every change on the feed."""
    client = redis.Redis.from_url(runtime.settings.redis_url)
    entries: Any = client.xrange(stream_key(runtime.settings.redis_namespace))
    return [(f[b"event"].decode(), f[b"company_id"].decode(), loads(f[b"data"])) for _, f in entries]


def incidents(runtime: WorkerRuntime) -> list[PlatformIncident]:
    with Session(runtime.engine) as session:
        return list(session.exec(select(PlatformIncident).order_by(col(PlatformIncident.opened_at))).all())


def test_auth_errors_or_a_single_company_never_open_an_incident(runtime: WorkerRuntime) -> None:
    one_company = {f"solo-{i}": "company-solo" for i in range(6)}
    refused = {f"refused-{i}": f"company-r{i % 3}" for i in range(6)}
    link(runtime, one_company | refused)
    fail(runtime, one_company, at=0)
    fail(runtime, refused, at=0, status="AuthError")
    assert run_incident_check(runtime, moment(1)) == "changed=0"
    assert incidents(runtime) == []
    with Session(runtime.engine) as session:
        assert load_connection(session, "solo-0", runtime.freshness, moment(1)).health == "failing"  # type: ignore[union-attr]
        assert load_connection(session, "refused-0", runtime.freshness, moment(1)).health == "needs_reauth"  # type: ignore[union-attr]


def test_the_clock_closes_an_incident_once_its_failures_leave_the_window_announcing_each_change_once(
    runtime: WorkerRuntime,
) -> None:
    outage = spread(5, 2)
    link(runtime, outage)
    fail(runtime, outage, at=0)
    assert run_incident_check(runtime, moment(1)) == "changed=1"
    assert run_incident_check(runtime, moment(2)) == "changed=0"  # checked again: nothing new
    (row,) = incidents(runtime)
    assert (row.opened_at, row.closed_at, row.affected_connections) == (moment(0), None, 5)
    with Session(runtime.engine) as session:
        health = load_connection(session, "conn-0", runtime.freshness, moment(2))
    assert health is not None and (health.health, health.next_action) == ("platform_incident", "wait")

    assert run_incident_check(runtime, moment(16)) == "changed=1"
    (row,) = incidents(runtime)
    assert row.closed_at == moment(15)  # the failures left the 15-minute window
    assert row.refresh_state == "none"  # no API key: no refreshes
    events = announced(runtime)
    platform = [(name, company, data["id"]) for name, company, data in events if name.startswith("platform.")]
    assert platform == [("platform.incident_opened", "", row.id), ("platform.incident_closed", "", row.id)]
    moves = [(d["connection"]["id"], d["current"]) for name, _, d in events if name == "connection.health_changed"]
    assert ("conn-0", "platform_incident") in moves and moves[-5:] == [(c, "failing") for c in sorted(outage)]


def test_the_ledger_alone_gives_the_same_incidents_when_checked_again(runtime: WorkerRuntime) -> None:
    outage = spread(6, 3)
    link(runtime, outage)
    fail(runtime, outage, at=0)
    fail(runtime, outage, at=20)  # a second outage after the first closed
    for m in range(1, 40, 3):
        run_incident_check(runtime, moment(m))
    first = [(i.id, i.opened_at, i.closed_at, i.data_types, i.affected_connections) for i in incidents(runtime)]
    assert len(first) == 2

    with Session(runtime.engine) as session, session.begin():
        session.exec(delete(PlatformIncident))
    for m in (14, 40):  # two checks, far apart: each derives from the ledger and the clock
        run_incident_check(runtime, moment(m))
    again = [(i.id, i.opened_at, i.closed_at, i.data_types, i.affected_connections) for i in incidents(runtime)]
    assert again == first


def fold_now(runtime: WorkerRuntime, *bodies: dict[str, Any]) -> None:
    """Fold as the workers' actor does, incident check included."""
    received = datetime.now(UTC).isoformat()
    requests = [FoldRequest(f"msg_{uuid.uuid4().hex}", json.dumps(body), received) for body in bodies]
    handle_webhooks(runtime.engine, runtime.feed, requests, runtime.freshness, None, incidents=runtime.incidents)


def test_the_fold_that_tips_the_window_opens_the_incident_and_the_one_that_ends_it_closes_it(
    runtime: WorkerRuntime,
) -> None:
    outage = spread(5, 2)
    link(runtime, outage)
    now = (datetime.now(UTC) - BASE_TIME).total_seconds() / 60
    first, last = list(outage.items())[:4], list(outage.items())[4:]
    fold_now(
        runtime,
        *(read_completed([("invoices", "FetchError")], connection_id=c, company_id=o, minutes=now) for c, o in first),
    )
    assert incidents(runtime) == []  # four connections: not yet
    fold_now(
        runtime,
        *(read_completed([("invoices", "FetchError")], connection_id=c, company_id=o, minutes=now) for c, o in last),
    )
    (row,) = incidents(runtime)
    assert row.closed_at is None
    recovered = [(t, "Complete") for t in ("accounts", "bills", "customers", "invoices")]
    time.sleep(0.01)
    now = (datetime.now(UTC) - BASE_TIME).total_seconds() / 60  # after the failures
    fold_now(
        runtime, *(read_completed(recovered, connection_id=c, company_id=o, minutes=now) for c, o in outage.items())
    )
    (row,) = incidents(runtime)
    assert row.closed_at is not None  # 5 failures of 25 results: below a quarter
    with Session(runtime.engine) as session:
        health = load_connection(session, "conn-0", runtime.freshness, datetime.now(UTC))
    assert health is not None and health.health == "healthy"


def test_the_check_runs_every_thirty_seconds_by_default_and_reads_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)
    assert (
        defaults.incident_window_seconds,
        defaults.incident_min_connections,
        defaults.incident_failure_share,
        defaults.incident_check_seconds,
        defaults.incident_auto_refresh,
    ) == (900, 5, 0.5, 30, False)
    assert INCIDENT_JOB in periodic_jobs()
    monkeypatch.setenv("SYNCTRACK_INCIDENT_WINDOW", "5m")
    monkeypatch.setenv("SYNCTRACK_INCIDENT_CHECK_SECONDS", "1m")
    monkeypatch.setenv("SYNCTRACK_CODAT_API_KEY", "key")
    changed = Settings(_env_file=None)
    assert (changed.incident_window_seconds, changed.incident_check_seconds, changed.incident_auto_refresh) == (
        300,
        60,
        True,
    )
    assert incident_interval(WorkerRuntime(changed, None, None)) == 60  # type: ignore[arg-type]
    assert refresh_interval(WorkerRuntime(changed, None, None)) == 60  # type: ignore[arg-type]
    assert INCIDENT_REFRESH_JOB in periodic_jobs()
    assert refresh_interval(WorkerRuntime(defaults, None, None)) == 0  # type: ignore[arg-type]  # no API key
    monkeypatch.setenv("SYNCTRACK_INCIDENT_AUTO_REFRESH", "false")
    off = Settings(_env_file=None)
    assert off.incident_auto_refresh is False
    assert refresh_interval(WorkerRuntime(off, None, None)) == 0  # type: ignore[arg-type]


def test_a_connection_of_another_platform_is_left_alone(runtime: WorkerRuntime) -> None:
    outage = spread(5, 2)
    link(runtime, outage)
    link(runtime, {"sage-1": "company-0"}, platform=("tgff", "Sage"))
    fail(runtime, outage | {"sage-1": "company-0"}, at=0)
    run_incident_check(runtime, moment(1))
    (row,) = incidents(runtime)
    assert row.affected_connections == 5
    with Session(runtime.engine) as session:
        other = load_connection(session, "sage-1", runtime.freshness, moment(1))
    assert other is not None and other.health == "failing"
