"""The store around the fold: batches, partial slices and SQL give exactly the in-memory fold's ledger."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select, update
from sqlmodel import Session

from schemas.events import Event, SyncFact, parse_event
from tests.support.builders import CONNECTION, at, connection_event, read_completed
from tests.support.workload import webhook_mix
from workers.ingest.handle import FoldOutcome, FoldRequest, handle_webhooks
from workers.ledger.memory import MemoryLedger
from workers.ledger.rows import CompanyRow, ConnectionRow, DataTypeRow, SyncRow, as_values, column_names
from workers.ledger.store import fold_events
from workers.ledger.tables import Company, Connection, DataTypeState, Sync
from workers.runtime.db import make_engine, upgrade

RECEIVED = "2026-11-25T12:00:00+00:00"


def test_each_ledger_table_is_built_on_its_row_and_has_exactly_its_columns() -> None:
    pairs = ((CompanyRow, Company), (ConnectionRow, Connection), (DataTypeRow, DataTypeState), (SyncRow, Sync))
    for row_type, table in pairs:
        assert issubclass(table, row_type)
        assert set(column_names(row_type)) == {c.name for c in inspect(table).columns}


def dump_database(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    with engine.connect() as conn:
        companies = {
            r["id"]: as_values(CompanyRow(**r))
            for r in conn.execute(select(Company.__table__)).mappings()  # type: ignore[attr-defined]
        }
        connections = {
            r["id"]: as_values(ConnectionRow(**r))
            for r in conn.execute(select(Connection.__table__)).mappings()  # type: ignore[attr-defined]
        }
        types = {
            f"{r['connection_id']}/{r['data_type']}": as_values(DataTypeRow(**r))
            for r in conn.execute(select(DataTypeState.__table__)).mappings()  # type: ignore[attr-defined]
        }
        syncs = {
            r["id"]: as_values(SyncRow(**r))
            for r in conn.execute(select(Sync.__table__)).mappings()  # type: ignore[attr-defined]
        }
    engine.dispose()
    return {
        "companies": dict(sorted(companies.items())),
        "connections": dict(sorted(connections.items())),
        "data_types": dict(sorted(types.items())),
        "syncs": dict(sorted(syncs.items())),
    }


def test_random_batches_of_a_shuffled_stream_store_the_in_memory_fold(database_url: str) -> None:
    deliveries = webhook_mix(600, duplicate_share=0.1, companies=4, hot_companies=1, seed=5)
    expected = MemoryLedger()
    seen: set[str] = set()
    for d in deliveries:
        if d.message_id not in seen:
            seen.add(d.message_id)
            event = parse_event(d.body, d.message_id, datetime.fromisoformat(RECEIVED).astimezone(UTC))
            if event.known:
                expected.apply(event)
    upgrade(database_url)
    engine = make_engine(database_url)
    rng = random.Random(1)
    start, outcomes = 0, []
    while start < len(deliveries):
        size = rng.choice([1, 2, 7, 50, 200])
        batch = deliveries[start : start + size]
        outcomes += handle_webhooks(engine, None, [FoldRequest(d.message_id, d.body, RECEIVED) for d in batch])
        start += size
    engine.dispose()
    statuses = [o.status for o in outcomes]
    assert statuses.count(FoldOutcome.DUPLICATE) == len(deliveries) - len(seen)
    assert dump_database(database_url) == expected.dump()


def test_replaying_everything_again_changes_nothing(database_url: str) -> None:
    deliveries = webhook_mix(200, companies=3, hot_companies=1, seed=9)
    upgrade(database_url)
    engine = make_engine(database_url)
    handle_webhooks(engine, None, [FoldRequest(d.message_id, d.body, RECEIVED) for d in deliveries])
    before = dump_database(database_url)
    replays = [FoldRequest(d.message_id, None, None, replay=True) for d in reversed(deliveries)]
    outcomes = handle_webhooks(engine, None, replays)
    engine.dispose()
    assert {o.status for o in outcomes} <= {"processed", "ignored"}
    assert dump_database(database_url) == before


def test_company_events_in_random_batches_store_the_in_memory_fold(database_url: str) -> None:
    from tests.support.builders import company_event
    from tests.support.workload import Delivery

    deliveries = webhook_mix(300, companies=3, hot_companies=1, seed=11)
    companies = sorted({parse_event(d.body, d.message_id, datetime.now(UTC)).company_id or "" for d in deliveries})
    rng = random.Random(3)
    for i, company_id in enumerate(c for c in companies if c):
        for kind, minutes in (("company.created", 1.0), ("company.deleted", rng.uniform(0, 60 * 24 * 7))):
            if kind == "company.deleted" and i == 0:
                continue  # one company stays alive
            body = company_event(kind, minutes=minutes, company_id=company_id, name=f"Company {i}")
            deliveries.append(Delivery(f"msg_company_{i}_{kind}", json.dumps(body)))
    rng.shuffle(deliveries)
    expected = MemoryLedger()
    for d in deliveries:
        event = parse_event(d.body, d.message_id, datetime.fromisoformat(RECEIVED).astimezone(UTC))
        if event.known:
            expected.apply(event)
    upgrade(database_url)
    engine = make_engine(database_url)
    start = 0
    while start < len(deliveries):
        size = rng.choice([1, 3, 40])
        batch = deliveries[start : start + size]
        handle_webhooks(engine, None, [FoldRequest(d.message_id, d.body, RECEIVED) for d in batch])
        start += size
    engine.dispose()
    stored = dump_database(database_url)
    assert stored == expected.dump()
    deleted = [c for c in stored["companies"].values() if c["deleted_at"] is not None]
    assert len(deleted) == 2
    gone = {c["id"] for c in deleted}
    assert all(row["deleted_at"] is not None for row in stored["connections"].values() if row["company_id"] in gone)


def test_the_store_carries_a_delay_through_later_requests_and_ends_it_with_the_result(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    connected = parse_event(json.dumps(connection_event(minutes=0)), "m-connected", datetime.now(UTC))
    with Session(engine) as session, session.begin():
        fold_events(session, [connected])
    delay = {"delayed": True, "codat_status": "Queued", "next_check_at": at(400), "check_wait_seconds": 120.0}
    with engine.begin() as conn:
        conn.execute(update(Sync).values(**delay))  # what the stale check writes

    refresh = Event(
        "audit:1",
        "action.refresh",
        at(5),
        "8a210b68-6988-11ed-a1eb-0242ac120002",
        syncs=(SyncFact(CONNECTION, "banking-accounts", "Queued", "ds-1", requested_at=at(5)),),
        source="action",
    )
    again = parse_event(json.dumps(connection_event("connection.reconnected", minutes=1)), "m-again", datetime.now(UTC))
    with Session(engine) as session, session.begin():
        fold_events(session, [refresh, again])
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Sync.__table__))}  # type: ignore[attr-defined]
    kept = rows["m-connected:" + CONNECTION + ":*"]
    assert (kept.delayed, kept.codat_status, kept.check_wait_seconds) == (True, "Queued", 120.0)
    assert not rows["ds-1"].delayed and not rows["m-again:" + CONNECTION + ":*"].delayed

    done = parse_event(json.dumps(read_completed(minutes=10)), "m-done", datetime.now(UTC))
    with Session(engine) as session, session.begin():
        changes, _ = fold_events(session, [done])
    closed = [c.sync for c in changes if c.sync is not None and c.sync.id.endswith(":*")]
    assert closed and all((s.delayed, s.codat_status, s.next_check_at) == (False, None, None) for s in closed)
    with engine.connect() as conn:
        left = list(conn.execute(select(Sync.__table__).where(Sync.__table__.c.delayed)))  # type: ignore[attr-defined]
    assert left == []
    engine.dispose()
