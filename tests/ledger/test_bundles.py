"""`workers/ledger/bundles.py`: a bundle read from the ledger and the clock (a rebuild reads the same), and
`bundle.ready` announced by the fold that completes the last member, once, for the newest refresh only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from tests.support.builders import COMPANY, CONNECTION, at, connection_event, iso, read_completed
from workers.ingest.handle import handle_webhook
from workers.ledger.bundles import load_bundles, start_refresh
from workers.ledger.freshness import FreshnessPolicy
from workers.ops.rebuild import fresh_target, rebuild_ledger
from workers.runtime.db import make_engine, upgrade

AR = ["invoices", "payments"]
POLICY = FreshnessPolicy(after_seconds=3600)
OTHER = "5f2a7c1e-0b3d-4e8f-9a6b-2c4d6e8f0a1b"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def fold(engine: Engine, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Fold one webhook as a worker does; the `bundle.ready` data it announced."""
    outcome = handle_webhook(engine, None, f"msg_{uuid.uuid4().hex}", json.dumps(body), iso(datetime.now(UTC)))
    return [entry.data for entry in outcome.entries if entry.name == "bundle.ready"]


def succeeded(data_type: str, minutes: float, connection: str = CONNECTION) -> dict[str, Any]:
    return read_completed([(data_type, "Complete")], minutes=minutes, connection_id=connection)


def request_refresh(engine: Engine, minutes: float) -> None:
    with Session(engine) as session, session.begin():
        start_refresh(session, COMPANY, "ar", AR, at(minutes), "test")


def bundle(engine: Engine, now: datetime) -> dict[str, Any]:
    with Session(engine) as session:
        (found,) = load_bundles(session, COMPANY, {"ar": AR}, POLICY, now)
    return found.model_dump(mode="json")


def test_a_bundle_is_as_of_its_oldest_members_latest_success_across_linked_connections(engine: Engine) -> None:
    fold(engine, connection_event(minutes=0))
    fold(engine, connection_event(minutes=0, connection_id=OTHER))
    fold(engine, succeeded("invoices", 10))
    fold(engine, succeeded("invoices", 100, OTHER))
    assert bundle(engine, at(110))["complete"] is False
    fold(engine, succeeded("payments", 40))
    assert bundle(engine, at(100)) == {
        "name": "ar",
        "data_types": AR,
        "as_of": iso(at(40)),
        "spread_seconds": 60 * 60.0,
        "stale_data_types": [],
        "complete": True,
    }
    # invoices: stale on the first connection, fresh on the other; payments: over the hour a minute later.
    assert bundle(engine, at(101))["stale_data_types"] == ["payments"]


def test_bundle_ready_comes_from_the_fold_completing_the_last_member_once(engine: Engine) -> None:
    fold(engine, connection_event(minutes=0))
    fold(engine, succeeded("payments", 5))
    request_refresh(engine, 10)
    assert fold(engine, succeeded("invoices", 12)) == []  # payments last succeeded before the request
    assert fold(engine, succeeded("payments", 9)) == []  # an older result that arrived late
    ready = fold(engine, succeeded("payments", 15))
    assert [(r["bundle"], r["as_of"], r["requested_at"], r["data_types"]) for r in ready] == [
        ("ar", iso(at(12)), iso(at(10)), AR)
    ]
    assert fold(engine, succeeded("invoices", 20)) == []


def test_a_new_refresh_supersedes_the_pending_one(engine: Engine) -> None:
    fold(engine, connection_event(minutes=0))
    request_refresh(engine, 10)
    request_refresh(engine, 20)
    fold(engine, succeeded("invoices", 15))
    assert fold(engine, succeeded("payments", 16)) == []  # after the first request, before the second
    assert fold(engine, succeeded("invoices", 25)) == []
    ready = fold(engine, succeeded("payments", 26))
    assert [(r["requested_at"], r["as_of"]) for r in ready] == [(iso(at(20)), iso(at(25)))]


def test_a_rebuild_reads_the_same_bundle(engine: Engine, tmp_path: Path) -> None:
    for body in (
        connection_event(minutes=0),
        succeeded("payments", 30),
        succeeded("invoices", 10),
        succeeded("invoices", 50),
    ):
        fold(engine, body)
    target, _ = fresh_target(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    rebuild_ledger(engine, target, order="shuffled", seed=3)
    now = at(60) + timedelta(seconds=1)
    assert bundle(target, now) == bundle(engine, now)
    assert bundle(engine, now)["as_of"] == iso(at(30))
