"""The store around the fold: batches, partial slices and SQL give exactly the in-memory fold's ledger."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from schemas.events import parse_event
from tests.support.ledger_memory import MemoryLedger
from tests.support.workload import webhook_mix
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.ledger.rows import ConnectionRow, DataTypeRow, SyncRow, as_values, column_names
from workers.ledger.tables import Connection, DataTypeState, Sync
from workers.runtime.db import make_engine, upgrade

RECEIVED = "2026-11-25T12:00:00+00:00"


def test_row_dataclasses_have_exactly_the_tables_columns() -> None:
    for row_type, table in ((ConnectionRow, Connection), (DataTypeRow, DataTypeState), (SyncRow, Sync)):
        assert set(column_names(row_type)) == {c.name for c in table.__table__.columns}  # type: ignore[attr-defined]


def dump_database(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    with engine.connect() as conn:
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
    assert statuses.count("duplicate") == len(deliveries) - len(seen)
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
