"""Freshness alone: a pure function of ledger rows, thresholds and `now` (unit and property tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Event, parse_event
from schemas.settings import Settings
from tests.ledger.test_fold import codat_events, fold_all
from tests.support.builders import CONNECTION, at, connection_event, read_completed
from workers.ledger.freshness import NO_SCHEDULES, SEVERITY, FreshnessPolicy, Schedules, assess
from workers.ledger.rows import ConnectionRow, DataTypeRow

DAY = timedelta(days=1)
POLICY = FreshnessPolicy(after_seconds=DAY.total_seconds(), overrides={"banking-transactions": 6 * 3600})


def linked(**fields: object) -> ConnectionRow:
    row = ConnectionRow(id="c", company_id="co", status="Linked", linked_at=at(0))
    for name, value in fields.items():
        setattr(row, name, value)
    return row


def data_type(name: str, last_success: datetime | None, phase: str = "succeeded") -> DataTypeRow:
    return DataTypeRow("c", name, "co", "Complete", phase, last_successful_sync_at=last_success)


def test_a_success_within_the_threshold_is_fresh_until_its_deadline() -> None:
    fresh = assess(linked(), [data_type("invoices", at(60))], POLICY, at(60) + DAY)
    assert (fresh.freshness, fresh.expected_by, fresh.overdue_data_types) == ("fresh", at(60) + DAY, ())
    assert fresh.data_types[0].freshness == "fresh"


def test_a_success_older_than_the_threshold_is_overdue_whatever_failed_since() -> None:
    rows = [data_type("invoices", at(0), phase="failed")]
    fresh = assess(linked(), rows, POLICY, at(0) + DAY + timedelta(seconds=1))
    assert fresh.freshness == "overdue"
    assert fresh.expected_by == at(0) + DAY
    assert fresh.overdue_data_types == ("invoices",)


def test_without_a_success_a_connection_is_pending_then_never() -> None:
    rows = [data_type("invoices", None, phase="failed")]
    pending = assess(linked(), rows, POLICY, at(60))
    assert (pending.freshness, pending.expected_by) == ("pending", at(0) + DAY)
    never = assess(linked(), rows, POLICY, at(0) + 2 * DAY)
    assert (never.freshness, never.expected_by) == ("never", None)
    assert never.data_types[0].expected_by is None


def test_a_linked_connection_without_data_types_waits_for_its_first_sync() -> None:
    assert assess(linked(), [], POLICY, at(10)).freshness == "pending"
    assert assess(linked(), [], POLICY, at(0) + 2 * DAY).freshness == "never"


@pytest.mark.parametrize(
    "fields",
    [{"status": "Unlinked"}, {"status": "Deauthorized"}, {"status": "PendingAuth"}, {"deleted_at": at(5)}],
)
def test_a_connection_not_linked_or_deleted_is_paused(fields: dict[str, object]) -> None:
    fresh = assess(linked(**fields), [data_type("invoices", at(0))], POLICY, at(0) + 5 * DAY)
    assert (fresh.freshness, fresh.expected_by, fresh.overdue_data_types) == ("paused", None, ())
    assert [d.freshness for d in fresh.data_types] == ["paused"]


def test_a_data_type_codat_does_not_support_is_paused_and_does_not_count() -> None:
    rows = [data_type("invoices", at(0)), data_type("bills", None, phase="unsupported")]
    fresh = assess(linked(), rows, POLICY, at(0) + 3 * DAY)
    assert fresh.of("bills") is not None and fresh.of("bills").freshness == "paused"  # type: ignore[union-attr]
    assert fresh.freshness == "overdue"
    assert fresh.overdue_data_types == ("invoices",)


def test_the_connection_is_the_worst_of_its_types_and_due_at_the_earliest_deadline() -> None:
    now = at(0) + DAY + timedelta(hours=1)
    rows = [
        data_type("invoices", at(0) + DAY),  # fresh until +2 days
        data_type("bills", at(0)),  # overdue since +1 day
        data_type("banking-transactions", None, phase="failed"),  # never (6 h threshold)
    ]
    fresh = assess(linked(), rows, POLICY, now)
    assert fresh.freshness == "overdue"
    assert fresh.overdue_data_types == ("bills",)
    assert fresh.expected_by == at(0) + DAY
    assert [(d.data_type, d.freshness) for d in fresh.data_types] == [
        ("banking-transactions", "never"),
        ("bills", "overdue"),
        ("invoices", "fresh"),
    ]


def test_overrides_give_one_data_type_its_own_threshold() -> None:
    rows = [data_type("banking-transactions", at(0)), data_type("banking-accounts", at(0))]
    fresh = assess(linked(), rows, POLICY, at(0) + timedelta(hours=7))
    assert fresh.overdue_data_types == ("banking-transactions",)
    assert fresh.expected_by == at(0) + timedelta(hours=6)


def test_severity_orders_overdue_never_pending_fresh() -> None:
    assert sorted(SEVERITY, key=SEVERITY.__getitem__) == ["paused", "fresh", "pending", "never", "overdue"]


def test_thresholds_are_read_from_settings_as_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCTRACK_FRESHNESS_AFTER", "2d")
    monkeypatch.setenv("SYNCTRACK_FRESHNESS_OVERRIDES", "banking-transactions=6h, invoices=30m")
    policy = FreshnessPolicy.from_settings(Settings(_env_file=None))
    assert policy.threshold("bills") == 2 * DAY
    assert policy.threshold("banking-transactions") == timedelta(hours=6)
    assert policy.threshold("invoices") == timedelta(minutes=30)
    monkeypatch.delenv("SYNCTRACK_FRESHNESS_AFTER")
    monkeypatch.delenv("SYNCTRACK_FRESHNESS_OVERRIDES")
    defaults = Settings(_env_file=None)
    assert (defaults.freshness_after_seconds, defaults.freshness_overrides) == (86_400, {})
    assert defaults.freshness_check_seconds == 60


# --- Codat's schedules ------------------------------------------------------------------------------

SCHEDULED = FreshnessPolicy(after_seconds=DAY.total_seconds(), overrides={"customers": 2 * 3600}, follow_schedules=True)
WEEKLY = 168.0


def source(schedules: Schedules, data_type: str = "invoices", policy: FreshnessPolicy = SCHEDULED) -> tuple[float, str]:
    threshold = policy.threshold_of(data_type, schedules)
    return threshold.seconds, threshold.source


def test_a_weekly_client_schedule_keeps_a_sync_three_days_old_fresh() -> None:
    weekly = Schedules(client={"invoices": WEEKLY})
    fresh = assess(linked(), [data_type("invoices", at(0))], SCHEDULED, at(0) + 3 * DAY, weekly)
    assert (fresh.freshness, fresh.expected_by) == ("fresh", at(0) + timedelta(hours=WEEKLY * 1.5))
    assert source(weekly) == (WEEKLY * 1.5 * 3600, "client_schedule")
    assert assess(linked(), [data_type("invoices", at(0))], SCHEDULED, at(0) + 3 * DAY).freshness == "overdue"


def test_a_company_schedule_that_differs_from_the_clients_is_the_companys_own() -> None:
    assert source(Schedules({"invoices": WEEKLY}, {"invoices": 48})) == (48 * 1.5 * 3600, "company_schedule")
    assert source(Schedules({}, {"invoices": 48})) == (48 * 1.5 * 3600, "company_schedule")


def test_a_company_schedule_equal_to_the_clients_or_absent_is_the_clients() -> None:
    assert source(Schedules({"invoices": WEEKLY}, {"invoices": WEEKLY})) == (WEEKLY * 1.5 * 3600, "client_schedule")
    assert source(Schedules({"invoices": WEEKLY}, {"bills": 48})) == (WEEKLY * 1.5 * 3600, "client_schedule")


def test_a_schedule_of_zero_or_none_gives_way_to_the_next_source() -> None:
    assert source(Schedules({"invoices": WEEKLY}, {"invoices": 0})) == (WEEKLY * 1.5 * 3600, "client_schedule")
    assert source(Schedules({"invoices": 0}, {"invoices": 0})) == (DAY.total_seconds(), "default")
    assert source(Schedules({"invoices": 0})) == (DAY.total_seconds(), "default")
    assert source(Schedules({"bills": WEEKLY}, {"bills": 48})) == (DAY.total_seconds(), "default")


def test_an_override_setting_wins_over_every_schedule() -> None:
    assert source(Schedules({"customers": WEEKLY}, {"customers": 48}), "customers") == (2 * 3600, "override")


def test_the_schedule_factor_scales_a_schedule_into_a_threshold() -> None:
    policy = FreshnessPolicy(schedule_factor=2.0, follow_schedules=True)
    assert source(Schedules({"invoices": 24}), policy=policy) == (48 * 3600, "client_schedule")


def test_without_codats_settings_read_the_schedules_do_not_count() -> None:
    unread = FreshnessPolicy(after_seconds=DAY.total_seconds())
    assert source(Schedules({"invoices": WEEKLY}, {"invoices": 48}), policy=unread) == (DAY.total_seconds(), "default")


def test_schedules_count_where_an_api_key_is_set_and_the_factor_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).freshness_schedule_factor == 1.5
    assert not FreshnessPolicy.from_settings(Settings(_env_file=None)).follow_schedules
    monkeypatch.setenv("SYNCTRACK_CODAT_API_KEY", "key")
    monkeypatch.setenv("SYNCTRACK_FRESHNESS_SCHEDULE_FACTOR", "2")
    policy = FreshnessPolicy.from_settings(Settings(_env_file=None))
    assert (policy.follow_schedules, policy.schedule_factor) == (True, 2.0)
    monkeypatch.setenv("SYNCTRACK_FRESHNESS_SCHEDULE_FACTOR", "0")
    with pytest.raises(ValueError, match="freshness_schedule_factor"):
        Settings(_env_file=None)


@pytest.mark.parametrize("bad", ["invoices", "invoices=soon", "=6h", "invoices=0"])
def test_a_malformed_override_is_refused_saying_why(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("SYNCTRACK_FRESHNESS_OVERRIDES", bad)
    with pytest.raises(ValueError, match="<data type>=<duration"):
        Settings(_env_file=None)


# --- properties -------------------------------------------------------------------------------------


def _ledger_freshness(
    events: list[Event], now: datetime, policy: FreshnessPolicy = POLICY, schedules: Schedules = NO_SCHEDULES
) -> dict[str, object]:
    ledger = fold_all(*events)
    return {
        cid: assess(conn, [r for (c, _), r in ledger.data_type_rows().items() if c == cid], policy, now, schedules)
        for cid, conn in ledger.connections.items()
    }


HOURS = st.sampled_from([0.0, 1.0, 24.0, 168.0])
DATA_TYPES = st.sampled_from(["invoices", "bills", "banking-transactions", "banking-accounts"])
SCHEDULES = st.builds(
    Schedules, st.dictionaries(DATA_TYPES, HOURS, max_size=4), st.dictionaries(DATA_TYPES, HOURS, max_size=4)
)


NOW_OFFSETS = st.sampled_from([timedelta(0), timedelta(hours=5), DAY, DAY + timedelta(minutes=20), 3 * DAY])


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=12, unique_by=lambda e: e.id),
    offset=NOW_OFFSETS,
    data=st.data(),
)
def test_the_order_events_arrived_in_does_not_change_freshness(
    events: list[Event], offset: timedelta, data: st.DataObject
) -> None:
    now = at(0) + offset
    shuffled = data.draw(st.permutations(events)) + data.draw(st.lists(st.sampled_from(events), max_size=4))
    assert _ledger_freshness(shuffled, now) == _ledger_freshness(events, now)


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=12, unique_by=lambda e: e.id),
    offset=NOW_OFFSETS,
    schedules=SCHEDULES,
    data=st.data(),
)
def test_under_codats_schedules_the_order_events_arrived_in_does_not_change_freshness(
    events: list[Event], offset: timedelta, schedules: Schedules, data: st.DataObject
) -> None:
    now = at(0) + offset
    shuffled = data.draw(st.permutations(events)) + data.draw(st.lists(st.sampled_from(events), max_size=4))
    assert _ledger_freshness(shuffled, now, SCHEDULED, schedules) == _ledger_freshness(
        events, now, SCHEDULED, schedules
    )


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=12, unique_by=lambda e: e.id),
    earlier=st.integers(0, 4 * 24 * 60),
    later=st.integers(0, 4 * 24 * 60),
)
def test_the_clock_only_moves_freshness_forward_and_only_at_deadlines(
    events: list[Event], earlier: int, later: int
) -> None:
    """With the rows fixed, a later `now` can only turn fresh into overdue and pending into never, and a
    deadline (`expected_by`) does not depend on when it is asked."""
    first, second = sorted((earlier, later))
    ledger = fold_all(*events)
    allowed = {("fresh", "overdue"), ("pending", "never")}
    for cid, conn in ledger.connections.items():
        rows = [r for (c, _), r in ledger.data_type_rows().items() if c == cid]
        before, after = assess(conn, rows, POLICY, at(first)), assess(conn, rows, POLICY, at(second))
        for old, new in zip(before.data_types, after.data_types, strict=True):
            assert old.freshness == new.freshness or (old.freshness, new.freshness) in allowed
            if old.freshness == new.freshness or old.freshness == "fresh":
                assert old.expected_by == new.expected_by
            if old.expected_by is not None and old.freshness != new.freshness:
                assert at(first) <= old.expected_by < at(second)


def test_a_sync_result_is_what_makes_an_overdue_connection_fresh_again() -> None:
    def event(body: dict) -> Event:  # type: ignore[type-arg]
        return parse_event(json.dumps(body), body["id"], datetime(2026, 11, 25, tzinfo=UTC))

    events = [event(connection_event(minutes=0)), event(read_completed([("invoices", "Complete")], minutes=10))]
    late = at(10) + DAY + timedelta(minutes=1)
    assert _ledger_freshness(events, late)[CONNECTION].freshness == "overdue"  # type: ignore[attr-defined]
    events.append(event(read_completed([("invoices", "Complete")], minutes=10 + 24 * 60)))
    assert _ledger_freshness(events, late)[CONNECTION].freshness == "fresh"  # type: ignore[attr-defined]
