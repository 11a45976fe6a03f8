"""`synctrack ledger rebuild`: a ledger rebuilt from the stored events equals the live one, whichever way
it is folded; a planted difference is reported; `--apply` repairs a damaged live ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from schemas.settings import Settings
from tests.support.ops_support import cli, store
from tests.support.workload import webhook_mix
from workers.ledger.tables import Connection, Sync
from workers.ops.rebuild import diff_dumps, dump_ledger, fresh_target, rebuild_ledger
from workers.runtime.db import make_engine, upgrade


def live_settings(database_url: str) -> Settings:
    upgrade(database_url)
    return Settings(database_url=database_url, _env_file=None)


@pytest.fixture
def live(database_url: str) -> Settings:
    """A live ledger folded by the workers' own function from a realistic shuffled stream with duplicates."""
    settings = live_settings(database_url)
    store(settings, webhook_mix(600, duplicate_share=0.1, seed=11))
    return settings


def test_a_rebuild_of_a_realistic_shuffled_stream_verifies_with_zero_differences(live: Settings) -> None:
    result = cli(live, "ledger", "rebuild", "--verify")
    assert result.exit_code == 0, result.output
    assert "rebuilt from 600 stored events" in result.output
    assert "0 differences" in result.output


@pytest.mark.parametrize(("mode", "order"), [("memory", "shuffled"), ("store", "generated"), ("store", "shuffled")])
def test_the_fold_does_not_care_how_or_in_which_order_it_is_rebuilt(
    sqlite_url: str, tmp_path: object, mode: str, order: str
) -> None:
    settings = live_settings(sqlite_url)
    store(settings, webhook_mix(400, duplicate_share=0.1, seed=12))
    engine = make_engine(sqlite_url)
    target, _ = fresh_target(sqlite_url)
    report = rebuild_ledger(engine, target, mode=mode, order=order, seed=3)  # type: ignore[arg-type]
    assert (report.events, report.folded) == (400, 400)
    assert diff_dumps(dump_ledger(engine), dump_ledger(target)) == []


def test_verify_prints_every_planted_difference_and_fails(sqlite_url: str) -> None:
    settings = live_settings(sqlite_url)
    store(settings, webhook_mix(200, seed=13))
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        victim = conn.execute(Connection.__table__.select().limit(1)).mappings().one()  # type: ignore[attr-defined]
        conn.execute(update(Connection).where(Connection.id == victim["id"]).values(status="Deauthorized"))
        gone = conn.execute(Sync.__table__.select().limit(1)).mappings().one()  # type: ignore[attr-defined]
        conn.execute(Sync.__table__.delete().where(Sync.__table__.c.id == gone["id"]))  # type: ignore[attr-defined]
    result = cli(settings, "ledger", "rebuild", "--verify")
    assert result.exit_code == 1
    assert f"connections[{victim['id']}].status: live='Deauthorized' rebuilt={victim['status']!r}" in result.output
    assert f"syncs[{gone['id']}]: only in the rebuilt ledger" in result.output
    assert "2 differences (0 explained" in result.output


def test_stale_syncs_and_facts_from_actions_are_explained_not_failures(sqlite_url: str) -> None:
    settings = live_settings(sqlite_url)
    store(settings, webhook_mix(200, seed=14))
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        active = conn.execute(Sync.__table__.select().where(Sync.__table__.c.phase == "active")).mappings().first()  # type: ignore[attr-defined]
        assert active is not None
        conn.execute(update(Sync).where(Sync.id == active["id"]).values(phase="stale"))
        conn.execute(
            Sync.__table__.insert().values(  # type: ignore[attr-defined]
                **{**active, "id": "refresh-1", "phase": "active", "source": "action", "event_id": "audit:1"}
            )
        )
    result = cli(settings, "ledger", "rebuild", "--verify")
    assert result.exit_code == 0, result.output
    assert (
        "syncs[refresh-1]: only in the live ledger  (from an action: no raw event to rebuild it from)" in result.output
    )
    assert "1 differences (1 explained" in result.output


def test_what_the_stale_check_wrote_of_a_delayed_sync_is_not_a_difference(sqlite_url: str) -> None:
    settings = live_settings(sqlite_url)
    store(settings, webhook_mix(200, seed=14))
    engine = make_engine(sqlite_url)
    delay = {
        "delayed": True,
        "codat_status": "Queued",
        "next_check_at": datetime(2026, 11, 25, 10, tzinfo=UTC),
        "check_wait_seconds": 120.0,
    }
    with engine.begin() as conn:
        active = conn.execute(Sync.__table__.select().where(Sync.__table__.c.phase == "active")).mappings().first()  # type: ignore[attr-defined]
        assert active is not None
        conn.execute(update(Sync).where(Sync.id == active["id"]).values(**delay))
    assert dump_ledger(engine, stale_as_active=False)["syncs"][active["id"]]["codat_status"] == "Queued"
    result = cli(settings, "ledger", "rebuild", "--verify")
    assert result.exit_code == 0, result.output
    assert "0 differences" in result.output


def test_apply_replaces_a_damaged_live_ledger_with_the_rebuilt_one(database_url: str) -> None:
    settings = live_settings(database_url)
    store(settings, webhook_mix(300, seed=15))
    engine = make_engine(database_url)
    healthy = dump_ledger(engine)
    with engine.begin() as conn:
        conn.execute(update(Connection).values(status="Unlinked", last_sync_at=datetime(2001, 1, 1, tzinfo=UTC)))
        conn.execute(Sync.__table__.delete())  # type: ignore[attr-defined]
    assert dump_ledger(engine) != healthy
    result = cli(settings, "ledger", "rebuild", "--apply", "--yes")
    assert result.exit_code == 0, result.output
    assert "live ledger replaced" in result.output
    assert dump_ledger(engine) == healthy


@pytest.mark.parametrize("mode", ["memory", "store"])
def test_a_rebuild_with_company_events_in_any_order_equals_the_live_ledger(sqlite_url: str, mode: str) -> None:
    import json
    import random

    from schemas.events import parse_event
    from tests.support.builders import company_event
    from tests.support.workload import Delivery

    settings = live_settings(sqlite_url)
    deliveries = webhook_mix(300, companies=4, hot_companies=1, seed=14)
    companies = sorted(
        {parse_event(d.body, d.message_id, datetime.now(UTC)).company_id or "" for d in deliveries} - {""}
    )
    rng = random.Random(7)
    for i, company_id in enumerate(companies):
        body = company_event(minutes=1, company_id=company_id, name=f"Company {i}", tags={"n": str(i)})
        deliveries.append(Delivery(f"msg_created_{i}", json.dumps(body)))
        if i % 2:
            deleted = company_event("company.deleted", minutes=rng.uniform(0, 60 * 24 * 7), company_id=company_id)
            deliveries.append(Delivery(f"msg_deleted_{i}", json.dumps(deleted)))
    rng.shuffle(deliveries)
    store(settings, deliveries)
    engine = make_engine(sqlite_url)
    target, _ = fresh_target(sqlite_url)
    rebuild_ledger(engine, target, mode=mode, order="shuffled", seed=5)  # type: ignore[arg-type]
    live_dump = dump_ledger(engine)
    assert diff_dumps(live_dump, dump_ledger(target)) == []
    assert sum(1 for row in live_dump["companies"].values() if row["deleted_at"] is not None) == len(companies) // 2
