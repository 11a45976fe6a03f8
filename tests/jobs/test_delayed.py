"""The stale check asks Codat first: a sync Codat still runs stays active and delayed, with a backoff; a result
Codat has closes it; only a sync Codat knows nothing newer of (or with no API key) turns stale.

Against the fake Codat as Codat behaves (a connection's datasets held `Queued` as an on-premise connector's
are, then released), with the webhooks it sends folded by the worker's own function.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from sqlmodel import Session, select

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from tests.support.services import wait_for
from workers.codat.still_running import ask_codat
from workers.ingest.handle import handle_webhook
from workers.jobs.stale import mark_stale_syncs
from workers.ledger.changes import ChangeFeed
from workers.ledger.tables import Sync
from workers.ledger.worker_runtime import WorkerRuntime
from workers.runtime.db import make_engine, upgrade

KEY = "stale-check-key"
STALE_AFTER = timedelta(hours=6)


@pytest.fixture
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=0.3, api_key=KEY)) as server:
        yield server


@pytest.fixture
def runtime(database_url: str, fake: FakeCodatServer) -> Iterator[WorkerRuntime]:
    upgrade(database_url)
    engine = make_engine(database_url)
    settings = Settings(
        database_url=database_url,
        sync_stale_after_seconds=STALE_AFTER.total_seconds(),
        sync_stale_check_seconds=60,
        codat_base_url=fake.url,
        codat_api_key=KEY,
        codat_max_retries=0,
        _env_file=None,
    )
    yield WorkerRuntime(settings, engine, ChangeFeed(fakeredis.FakeRedis(), "t", 1000))
    engine.dispose()


def fold_what_codat_sent(runtime: WorkerRuntime, fake: FakeCodatServer) -> None:
    """Fold every webhook the fake Codat sent so far, as the worker does."""
    for message in fake.control.messages():
        handle_webhook(
            runtime.engine, None, message["id"], json.dumps(message["body"]), message["body"]["generatedDate"]
        )


def seeded(
    runtime: WorkerRuntime, fake: FakeCodatServer, hold: str | None = None, **options: Any
) -> tuple[str, list[str]]:
    """A company whose `connection.connected` opened a `*` sync per connection; (company, connection ids)."""
    company = fake.control.seed(companies=[{"platforms": ["xero"], "hold": hold}], **options)[0]
    fold_what_codat_sent(runtime, fake)
    return company["id"], [c["id"] for c in company["connections"]]


def check(runtime: WorkerRuntime, now: datetime, *, asking: bool = True) -> int:
    return mark_stale_syncs(runtime, now=now, ask=ask_codat if asking else None)


def later() -> datetime:
    """A moment past the stale limit of every sync opened so far."""
    return datetime.now(UTC) + STALE_AFTER + timedelta(minutes=1)


def sync_rows(runtime: WorkerRuntime) -> list[Sync]:
    with Session(runtime.engine) as session:
        return list(session.exec(select(Sync).order_by(Sync.id)).all())


def announced(runtime: WorkerRuntime) -> list[tuple[str, dict[str, Any]]]:
    assert runtime.feed is not None
    entries = runtime.feed.redis.xrange(runtime.feed.key)
    return [(fields[b"event"].decode(), json.loads(fields[b"data"])) for _, fields in entries]  # type: ignore[union-attr,index]


def codat_calls(fake: FakeCodatServer, path: str) -> int:
    return sum(1 for request in fake.control.requests() if path in request["path"])


def test_a_sync_codat_still_has_queued_stays_active_and_delayed_and_is_announced_once(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    _, (connection,) = seeded(runtime, fake, hold="Queued")
    (opened,) = sync_rows(runtime)
    assert (opened.data_type, opened.phase, opened.delayed, opened.codat_status) == ("*", "active", False, None)

    now = later()
    assert check(runtime, now) == 0

    (row,) = sync_rows(runtime)
    assert (row.phase, row.delayed, row.codat_status) == ("active", True, "Queued")
    assert row.next_check_at == now + timedelta(seconds=60)
    (name, data), *rest = announced(runtime)
    assert rest == []
    assert name == "sync.delayed"
    assert (data["id"], data["phase"], data["delayed"], data["codat_status"]) == (row.id, "active", True, "Queued")
    assert (data["connection_id"], data["event_id"]) == (connection, None)


def test_the_wait_doubles_up_to_an_hour_while_codat_says_the_same_and_starts_again_when_it_changes(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    _, (connection,) = seeded(runtime, fake, hold="Queued")
    now = later()
    waits = []
    for _ in range(8):
        check(runtime, now)
        (row,) = sync_rows(runtime)
        assert row.next_check_at is not None and row.check_wait_seconds is not None
        assert row.next_check_at == now + timedelta(seconds=row.check_wait_seconds)
        waits.append(row.check_wait_seconds)
        now = row.next_check_at
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert [name for name, _ in announced(runtime)] == ["sync.delayed"]

    fake.control.hold(connection, "Fetching")
    check(runtime, now)
    (row,) = sync_rows(runtime)
    assert (row.codat_status, row.check_wait_seconds) == ("Fetching", 60)
    assert [(name, data["codat_status"]) for name, data in announced(runtime)] == [
        ("sync.delayed", "Queued"),
        ("sync.delayed", "Fetching"),
    ]


def test_a_delayed_sync_is_not_asked_about_before_its_next_check(runtime: WorkerRuntime, fake: FakeCodatServer) -> None:
    seeded(runtime, fake, hold="Queued")
    now = later()
    check(runtime, now)
    asked = codat_calls(fake, "/dataStatus")
    assert asked == 1

    check(runtime, now + timedelta(seconds=59))
    assert codat_calls(fake, "/dataStatus") == asked
    check(runtime, now + timedelta(seconds=60))
    assert codat_calls(fake, "/dataStatus") == asked + 1


def test_a_result_codat_has_is_folded_with_source_reconcile_and_closes_the_delayed_sync(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    _, (connection,) = seeded(runtime, fake, hold="Queued")
    now = later()
    check(runtime, now)
    (delayed,) = sync_rows(runtime)
    sent = len(fake.control.messages())

    fake.control.hold(connection, None)
    wait_for(lambda: len(fake.control.messages()) > sent, timeout=5, message="Codat finished the read")
    assert check(runtime, now + timedelta(minutes=1)) == 0

    rows = sync_rows(runtime)
    assert delayed.id not in {row.id for row in rows}
    assert rows and {(row.phase, row.source, row.delayed, row.codat_status) for row in rows} == {
        ("succeeded", "reconcile", False, None)
    }
    finished = {data.get("id"): data for name, data in announced(runtime) if name == "sync.completed"}
    closed = finished[delayed.id]
    assert (closed["phase"], closed["delayed"], closed["codat_status"]) == ("succeeded", False, None)
    assert {row.id for row in rows} <= set(finished)
    assert ("connection.updated", connection) in [(name, data.get("id")) for name, data in announced(runtime)]


def test_a_sync_codat_knows_nothing_newer_of_turns_stale(runtime: WorkerRuntime, fake: FakeCodatServer) -> None:
    seeded(runtime, fake, initial_read=False, history=3)  # Codat's last reads all finished before the link

    assert check(runtime, later()) == 1

    (row,) = sync_rows(runtime)
    assert (row.phase, row.delayed) == ("stale", False)
    # Nothing is left to wait for: the connection's health moves on from syncing.
    assert [name for name, _ in announced(runtime)] == [
        "sync.failed",
        "connection.updated",
        "connection.health_changed",
    ]
    assert codat_calls(fake, "/dataStatus") == 1
    assert codat_calls(fake, "/data/history") == 0  # dataStatus alone says nothing is newer


def test_without_an_api_key_a_sync_turns_stale_without_asking_codat(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    seeded(runtime, fake, hold="Queued")
    fake.control.clear_requests()
    runtime.settings = runtime.settings.model_copy(update={"codat_api_key": ""})

    assert check(runtime, later()) == 1

    assert [(row.phase, row.delayed) for row in sync_rows(runtime)] == [("stale", False)]
    assert fake.control.requests() == []


def test_a_refused_api_key_counts_as_none(runtime: WorkerRuntime, fake: FakeCodatServer) -> None:
    seeded(runtime, fake, hold="Queued")
    runtime.settings = runtime.settings.model_copy(update={"codat_api_key": "a-key-codat-refuses"})

    assert check(runtime, later()) == 1
    assert [row.phase for row in sync_rows(runtime)] == ["stale"]


def test_a_sync_codat_could_not_be_asked_about_waits_for_the_next_check(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    seeded(runtime, fake, hold="Queued")
    fake.control.fault("/dataStatus$", status=503, times=1)
    now = later()

    assert check(runtime, now) == 0
    assert [(row.phase, row.delayed) for row in sync_rows(runtime)] == [("active", False)]
    assert announced(runtime) == []

    check(runtime, now + timedelta(seconds=1))
    assert [(row.phase, row.delayed, row.codat_status) for row in sync_rows(runtime)] == [("active", True, "Queued")]


def test_one_data_status_call_asks_about_every_sync_of_a_company_and_any_running_type_delays_a_whole_read(
    runtime: WorkerRuntime, fake: FakeCodatServer
) -> None:
    company = fake.control.seed(companies=[{"platforms": ["xero", "hsbc"]}])[0]
    xero, hsbc = (c["id"] for c in company["connections"])
    fake.control.hold(hsbc, "Fetching")
    fake.control.hold(xero, "Queued")
    fold_what_codat_sent(runtime, fake)
    fake.control.clear_requests()

    check(runtime, later())

    rows = sync_rows(runtime)
    assert {(row.connection_id, row.data_type, row.delayed) for row in rows} == {(xero, "*", True), (hsbc, "*", True)}
    assert {row.codat_status for row in rows} == {"Queued"}  # the least advanced of the company's data types
    assert [request["path"] for request in fake.control.requests()] == [f"/companies/{company['id']}/dataStatus"]
