"""The fold alone: per event type, both generations, and order independence (property test)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Event, SyncFact, parse_event
from tests.support.builders import (
    COMPANY,
    CONNECTION,
    at,
    company_event,
    connection_error,
    connection_event,
    fixture,
    legacy_alert,
    read_completed,
)
from workers.ledger.memory import MemoryLedger
from workers.ledger.rows import OPEN_PHASES

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def ev(body: dict, message_id: str | None = None, received: datetime = RECEIVED) -> Event:  # type: ignore[type-arg]
    return parse_event(json.dumps(body), message_id or body.get("id") or body["AlertId"], received)


def fold_all(*events: Event) -> MemoryLedger:
    ledger = MemoryLedger()
    for event in events:
        ledger.apply(event)
    return ledger


def test_connected_links_the_connection_and_opens_an_expected_sync() -> None:
    ledger = MemoryLedger()
    changes = ledger.apply(ev(connection_event("connection.connected", minutes=0)))
    conn = ledger.connections[CONNECTION]
    assert conn.status == "Linked"
    assert conn.linked_at == at(0)
    assert conn.connection_info == {"currency": "GBP"}
    (active,) = ledger.sync_rows().values()
    assert (active.data_type, active.phase, active.requested_at) == ("*", "active", at(0))
    assert [c.kind for c in changes] == ["connection.updated", "sync.started"]


def test_read_completed_closes_the_expected_sync_and_sets_first_and_last_sync() -> None:
    ledger = fold_all(ev(connection_event(minutes=0)))
    changes = ledger.apply(ev(read_completed([("invoices", "Complete"), ("bills", "FetchError")], minutes=10)))
    conn = ledger.connections[CONNECTION]
    assert {s.phase for s in ledger.sync_rows().values()} == {"succeeded", "failed"}
    assert conn.first_sync_at == conn.last_sync_at == conn.last_successful_sync_at == at(10)
    assert conn.last_sync_status == "FetchError"  # a failure is never hidden by a simultaneous success
    closed = [c for c in changes if c.sync is not None and c.sync.data_type == "*"]
    assert closed and closed[0].sync is not None and closed[0].sync.completed_at == at(10)


def test_a_completion_generated_before_the_request_does_not_close_it() -> None:
    ledger = fold_all(ev(read_completed(minutes=5)), ev(connection_event("connection.reconnected", minutes=10)))
    assert [s.phase for s in ledger.sync_rows().values() if s.data_type == "*"] == ["active"]


def test_a_late_request_never_reopens_a_completed_sync() -> None:
    ledger = fold_all(ev(read_completed(minutes=10)), ev(connection_event("connection.connected", minutes=0)))
    assert all(s.phase != "active" for s in ledger.sync_rows().values())
    assert ledger.connections[CONNECTION].status == "Linked"


def test_an_older_disconnect_arriving_late_leaves_the_connection_linked() -> None:
    connected = ev(connection_event("connection.connected", minutes=10))
    disconnected = ev(connection_event("connection.disconnected", minutes=5))
    ledger = fold_all(connected, disconnected)
    conn = ledger.connections[CONNECTION]
    assert conn.status == "Linked"
    assert conn.disconnected_at == at(5)


def test_deauthorized_and_unlinked_statuses_come_from_the_payload() -> None:
    ledger = fold_all(ev(connection_event("connection.disconnected", minutes=1, status="Deauthorized")))
    assert ledger.connections[CONNECTION].status == "Deauthorized"


def test_the_latest_connection_details_win_whole() -> None:
    old = ev(connection_event("connection.connected", minutes=0, platform="Old Bank", info={"currency": "EUR"}))
    new = ev(connection_event("connection.reconnected", minutes=30, platform="New Bank", info={}))
    for order in ([old, new], [new, old]):
        conn = fold_all(*order).connections[CONNECTION]
        assert (conn.platform_name, conn.connection_info) == ("New Bank", {})


def test_a_deleted_connection_keeps_its_row_but_no_history() -> None:
    ledger = fold_all(
        ev(connection_event(minutes=0)),
        ev(read_completed(minutes=10)),
        ev(connection_event("connection.deleted", minutes=20)),
        ev(read_completed(minutes=30)),
    )
    conn = ledger.connections[CONNECTION]
    assert conn.deleted_at == at(20)
    assert ledger.sync_rows() == {} and ledger.data_type_rows() == {}


def test_unsupported_data_types_are_neither_success_nor_failure() -> None:
    ledger = fold_all(ev(read_completed([("banking-transactionCategories", "NotSupported")], minutes=3)))
    (sync,) = ledger.sync_rows().values()
    assert sync.phase == "unsupported"
    assert ledger.connections[CONNECTION].first_sync_at is None


def test_legacy_status_change_and_sync_results_fold_like_current_events() -> None:
    conn_id = "2e2eb431-c0fa-4dc9-93fa-d29781c12bcd"
    ledger = fold_all(
        ev(fixture("legacy.DataConnectionStatusChanged"), received=at(0)),
        ev(fixture("legacy.DataSyncCompleted"), received=at(5)),
        ev(fixture("legacy.DataSyncStatusChangedToError"), received=at(6)),
    )
    conn = ledger.connections[conn_id]
    assert (conn.status, conn.platform_key) == ("Linked", "gbol")
    by_type = {s.data_type: s for s in ledger.sync_rows().values()}
    assert set(by_type) == {"invoices", "bills"}  # the expected "*" sync was closed by the first result
    assert by_type["invoices"].id == "7d9e2f1a-5b3c-4a6d-9e8f-0a1b2c3d4e5f"
    assert by_type["bills"].phase == "failed"
    assert conn.first_sync_at == at(5) and conn.last_sync_at == at(6)


def test_action_pull_operation_is_completed_by_its_dataset_result() -> None:
    requested = Event(
        id="act-1",
        event_type="action.refresh",
        generated_at=at(0),
        company_id="c",
        syncs=(SyncFact(CONNECTION, "invoices", "Queued", "ds-1", requested_at=at(0)),),
        source="action",
    )
    finished = Event(
        id="rec-1",
        event_type="reconcile",
        generated_at=at(4),
        company_id="c",
        syncs=(SyncFact(CONNECTION, "invoices", "Complete", "ds-1", requested_at=at(0), records_modified=True),),
        source="reconcile",
    )
    for order in ([requested, finished], [finished, requested]):
        ledger = fold_all(*order)
        (sync,) = ledger.sync_rows().values()
        assert (sync.id, sync.phase, sync.requested_at, sync.completed_at) == ("ds-1", "succeeded", at(0), at(4))


def test_unknown_events_change_nothing() -> None:
    ledger = MemoryLedger()
    unknown = Event(id="u", event_type="client.rateLimit.reached", generated_at=at(0), known=False)
    assert ledger.apply(unknown) == []
    assert ledger.dump() == MemoryLedger().dump()


def test_company_created_records_name_description_and_tags() -> None:
    ledger = fold_all(ev(company_event(name="Larkspur Joinery", tags={"crm": "a-1"})))
    company = ledger.companies[COMPANY]
    assert (company.name, company.description, company.tags) == (
        "Larkspur Joinery",
        "Asked for an overdraft.",
        {"crm": "a-1"},
    )
    assert company.deleted_at is None and ledger.connections == {}


def test_the_newest_company_object_wins_whole() -> None:
    old = ev(company_event(minutes=0, name="Old", description="old", tags={"a": "1"}))
    new = ev(company_event("company.deleted", minutes=30, name="New", description=None, tags={}))
    for order in ([old, new], [new, old]):
        company = fold_all(*order).companies[COMPANY]
        assert (company.name, company.description, company.tags, company.deleted_at) == ("New", None, {}, at(30))


def test_company_deleted_deletes_every_connection_of_the_company_as_connection_deleted_would() -> None:
    ledger = fold_all(
        ev(connection_event(minutes=0)),
        ev(connection_event(minutes=0, connection_id="c2")),
        ev(connection_event(minutes=0, connection_id="elsewhere", company_id="other")),
        ev(read_completed(minutes=10)),
    )
    changes = ledger.apply(ev(company_event("company.deleted", minutes=20)))
    assert ledger.companies[COMPANY].deleted_at == at(20)
    assert {c: ledger.connections[c].deleted_at for c in (CONNECTION, "c2", "elsewhere")} == {
        CONNECTION: at(20),
        "c2": at(20),
        "elsewhere": None,
    }
    assert sorted((c.kind, c.connection_id) for c in changes) == sorted(
        [("connection.updated", CONNECTION), ("connection.updated", "c2")]
    )
    assert {s.connection_id for s in ledger.sync_rows().values()} == {"elsewhere"}  # history goes with the connection
    assert all(k[0] == "elsewhere" for k in ledger.data_type_rows())


def test_a_connection_event_generated_before_the_deletion_but_folded_after_leaves_it_deleted() -> None:
    ledger = fold_all(
        ev(connection_event(minutes=0)),
        ev(company_event("company.deleted", minutes=20)),
        ev(connection_event("connection.reconnected", minutes=10)),
        ev(read_completed(minutes=15)),
    )
    conn = ledger.connections[CONNECTION]
    assert conn.deleted_at == at(20)
    assert ledger.sync_rows() == {}


def test_a_connection_first_heard_of_after_its_companys_deletion_is_deleted_on_arrival() -> None:
    ledger = fold_all(ev(company_event("company.deleted", minutes=20)))
    changes = ledger.apply(ev(connection_event(minutes=5, connection_id="late")))
    assert ledger.connections["late"].deleted_at == at(20)
    assert [c.kind for c in changes] == ["connection.updated"]  # no sync is opened for a deleted connection
    assert ledger.sync_rows() == {}


# --- order independence ------------------------------------------------------------------------

CONNECTIONS = [CONNECTION, "c2"]
STATUSES = ["Complete", "FetchError", "NotSupported", "AuthError", "Complete"]
TYPES = ["invoices", "bills", "bankAccounts"]
MINUTES = [0, 5, 10, 15]


@st.composite
def codat_events(draw: st.DrawFn) -> Event:
    conn = draw(st.sampled_from(CONNECTIONS))
    minutes = draw(st.sampled_from(MINUTES))
    kinds = ["connect", "reconnect", "disconnect", "read", "legacy_done", "legacy_error", "delete", "action"]
    kinds += ["company_created", "company_deleted", "initial_read", "link_failed"]
    kind = draw(st.sampled_from(kinds))
    n = draw(st.integers(0, 10_000))
    if kind in ("company_created", "company_deleted"):
        return ev(
            company_event(
                "company.created" if kind == "company_created" else "company.deleted",
                minutes=minutes,
                name=draw(st.sampled_from(["Toft Stores", "Toft Stores Ltd"])),
                tags={"region": draw(st.sampled_from(["uk", "us"]))},
                event_id=f"e{n}",
            ),
            message_id=f"m{n}",
        )
    if kind == "action":
        data_type = draw(st.sampled_from(TYPES))
        key = f"ds-{conn}-{data_type}-{draw(st.integers(0, 2))}"
        return Event(
            id=f"m{n}",
            event_type="action.refresh",
            generated_at=at(minutes),
            company_id="8a210b68-6988-11ed-a1eb-0242ac120002",
            syncs=(SyncFact(conn, data_type, "Queued", key, requested_at=at(minutes)),),
            source="action",
        )
    if kind == "link_failed":
        errors = draw(
            st.lists(
                st.builds(
                    connection_error,
                    st.sampled_from(["403", "500"]),
                    st.sampled_from(["User cancelled linking", "Bank unavailable"]),
                    status=st.sampled_from(["Active", "Resolved", None]),
                    resolved_minutes=st.sampled_from([None, 3]),
                ),
                max_size=2,
            )
        )
        body = connection_event(
            "connection.failed", minutes=minutes, connection_id=conn, errors=errors, event_id=f"e{n}"
        )
        return ev(body, message_id=f"m{n}")
    if kind in ("connect", "reconnect", "disconnect", "delete"):
        event_type = {
            "connect": "connection.connected",
            "reconnect": "connection.reconnected",
            "disconnect": "connection.disconnected",
            "delete": "connection.deleted",
        }[kind]
        status = draw(st.sampled_from(["Unlinked", "Deauthorized"])) if kind == "disconnect" else None
        platform = draw(st.sampled_from(["Xero", "Sage"]))
        # Errors a linked connection can carry: an authorisation refusal (current or resolved) or another.
        errors = draw(
            st.lists(
                st.builds(
                    connection_error,
                    st.sampled_from(["401", "403", "500"]),
                    status=st.sampled_from(["Active", "Resolved"]),
                ),
                max_size=1,
            )
        )
        body = connection_event(
            event_type,
            minutes=minutes,
            connection_id=conn,
            status=status,
            platform=platform,
            event_id=f"e{n}",
            errors=errors,
        )
        return ev(body, message_id=f"m{n}")
    if kind in ("read", "initial_read"):
        results = draw(
            st.lists(
                st.tuples(st.sampled_from(TYPES), st.sampled_from(STATUSES)),
                min_size=1,
                max_size=3,
                unique_by=lambda r: r[0],
            )
        )
        body = read_completed(
            results, minutes=minutes, connection_id=conn, initial=kind == "initial_read", event_id=f"e{n}"
        )
        return ev(body, message_id=f"m{n}")
    data_type = draw(st.sampled_from(TYPES))
    dataset = f"ds-{conn}-{data_type}-{draw(st.integers(0, 2))}"  # one pull of one type of one connection
    if kind == "legacy_done":
        body = legacy_alert("Data sync completed", {"dataType": data_type, "datasetId": dataset}, connection_id=conn)
    else:
        body = legacy_alert(
            "Data Sync Status Changed To Error",
            {"dataType": data_type, "datasetStatus": "FetchError", "datasetId": dataset},
            connection_id=conn,
        )
    return ev(body, message_id=f"m{n}", received=at(minutes) + timedelta(seconds=n % 7))


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=14, unique_by=lambda e: e.id),
    data=st.data(),
)
def test_any_permutation_with_duplicates_gives_the_same_ledger(events: list[Event], data: st.DataObject) -> None:
    reference = fold_all(*events).dump()
    shuffled = data.draw(st.permutations(events))
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=6))
    mixed = data.draw(st.permutations(shuffled + duplicates))
    assert fold_all(*mixed).dump() == reference


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=14, unique_by=lambda e: e.id),
    data=st.data(),
)
def test_the_first_read_is_announced_once_per_connection_in_any_order_with_duplicates(
    events: list[Event], data: st.DataObject
) -> None:
    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=6))
    mixed = data.draw(st.permutations(events + duplicates))
    ledger = MemoryLedger()
    announced = [
        c.connection_id for e in mixed for c in ledger.apply(e) if c.kind == "connection.initial_read_completed"
    ]
    for conn in CONNECTIONS:
        reads = [e.generated_at for e in events if e.initial_read and conn in e.connection_ids]
        row = ledger.connections.get(conn)
        assert announced.count(conn) == (1 if reads else 0)
        assert (row.initial_read_completed_at if row else None) == (min(reads) if reads else None)


def delay_open_syncs(ledger: MemoryLedger) -> set[str]:
    """Write what the stale check writes of a sync Codat still runs, on every open sync; their ids."""
    delayed = set()
    for row in ledger.sync_rows().values():
        if row.phase in OPEN_PHASES:
            row.delayed, row.codat_status, row.next_check_at, row.check_wait_seconds = True, "Queued", at(90), 240.0
            delayed.add(row.id)
    return delayed


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(codat_events(), min_size=1, max_size=8, unique_by=lambda e: e.id),
    after=st.lists(codat_events(), min_size=1, max_size=8, unique_by=lambda e: e.id),
    data=st.data(),
)
def test_a_delay_is_carried_by_any_permutation_of_later_events_and_ended_by_the_result_that_closes_the_sync(
    before: list[Event], after: list[Event], data: st.DataObject
) -> None:
    after = [e for e in after if e.id not in {b.id for b in before}]
    reference = fold_all(*before)
    delayed = delay_open_syncs(reference)
    announced = [change for event in after for change in reference.apply(event)]
    mixed = data.draw(st.permutations(after + data.draw(st.lists(st.sampled_from(after), max_size=4)) if after else []))
    other = fold_all(*before)
    delay_open_syncs(other)
    for event in mixed:
        other.apply(event)

    assert other.dump() == reference.dump()
    for row in reference.sync_rows().values():
        if row.phase in OPEN_PHASES and row.id in delayed:
            assert (row.delayed, row.codat_status, row.check_wait_seconds) == (True, "Queued", 240.0)
        elif row.phase not in OPEN_PHASES:
            assert (row.delayed, row.codat_status, row.next_check_at, row.check_wait_seconds) == (
                False,
                None,
                None,
                None,
            )
    for change in announced:
        if change.sync is not None and change.kind in ("sync.completed", "sync.failed"):
            assert (change.sync.delayed, change.sync.codat_status) == (False, None)
