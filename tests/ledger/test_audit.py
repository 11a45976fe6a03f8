"""Matching an action to the webhook that confirms it, whichever is recorded first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from tests.support.builders import COMPANY, CONNECTION, connection_event, iso, read_completed
from tests.support.ledger_fill import fold_webhooks
from workers.codat.actions import record_refresh, record_unlink
from workers.ledger.tables import AuditRecord, Connection
from workers.runtime.db import make_engine, upgrade

NOW = datetime.now(UTC)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    deliver(engine, connection_event(minutes=0))
    yield engine
    engine.dispose()


def deliver(engine: Engine, body: dict[str, Any], at: datetime | None = None) -> str:
    if at is not None:
        body = {**body, "generatedDate": iso(at)}
    (message_id,) = fold_webhooks(engine, body)
    return message_id


def unlink(engine: Engine, at: datetime) -> AuditRecord:
    with Session(engine, expire_on_commit=False) as session:
        connection = session.get(Connection, CONNECTION)
    assert connection is not None
    answer = {"id": CONNECTION, "status": "Unlinked"}
    result = record_unlink(
        engine, actor=None, at=at, answered_at=at, connection=connection, codat_status=200, answer=answer
    )
    return result.record


def audit(engine: Engine, record_id: int | None) -> AuditRecord:
    with Session(engine) as session:
        row = session.get(AuditRecord, record_id)
    assert row is not None
    return row


def test_a_webhook_folded_after_the_action_confirms_it(engine: Engine) -> None:
    record = unlink(engine, NOW)
    event_id = deliver(engine, connection_event("connection.disconnected"), NOW + timedelta(seconds=2))
    row = audit(engine, record.id)
    assert (row.confirmed_by_event_id, row.confirmed_at) == (event_id, NOW + timedelta(seconds=2))


def test_a_webhook_folded_before_the_action_was_recorded_confirms_it_too(engine: Engine) -> None:
    event_id = deliver(engine, connection_event("connection.disconnected"), NOW + timedelta(seconds=1))
    record = unlink(engine, NOW)
    assert audit(engine, record.id).confirmed_by_event_id == event_id


def test_the_earliest_confirming_webhook_wins_whatever_the_arrival_order(engine: Engine) -> None:
    record = unlink(engine, NOW)
    deliver(engine, connection_event("connection.disconnected"), NOW + timedelta(seconds=9))
    earliest = deliver(engine, connection_event("connection.disconnected"), NOW + timedelta(seconds=3))
    assert audit(engine, record.id).confirmed_by_event_id == earliest


def test_a_webhook_from_before_the_action_or_of_another_kind_does_not_confirm_it(engine: Engine) -> None:
    record = unlink(engine, NOW)
    deliver(engine, connection_event("connection.disconnected"), NOW - timedelta(minutes=5))
    deliver(engine, connection_event("connection.reconnected"), NOW + timedelta(seconds=1))
    deliver(engine, read_completed(), NOW + timedelta(seconds=2))
    assert audit(engine, record.id).confirmed_by_event_id is None


def test_a_refresh_of_one_data_type_is_confirmed_only_by_a_result_of_that_type(engine: Engine) -> None:
    record = record_refresh(
        engine,
        actor=None,
        at=NOW,
        company_id=COMPANY,
        data_type="bills",
        connection_id=CONNECTION,
        codat_status=200,
        operations=[],
    ).record
    deliver(engine, read_completed([("invoices", "Complete")]), NOW + timedelta(seconds=1))
    assert audit(engine, record.id).confirmed_by_event_id is None
    failed = deliver(engine, read_completed([("bills", "FetchError")]), NOW + timedelta(seconds=2))
    assert audit(engine, record.id).confirmed_by_event_id == failed
