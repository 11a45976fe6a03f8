"""The fold's record of a connection's first read and of why its latest link attempt failed."""

from __future__ import annotations

from tests.ledger.test_fold import ev, fold_all
from tests.support.builders import CONNECTION, at, connection_error, connection_event, read_completed
from workers.ledger.memory import MemoryLedger

FIRST_READ = "connection.initial_read_completed"


def test_the_first_read_is_the_earliest_initial_read_and_is_announced_when_it_first_gets_a_value() -> None:
    ledger = fold_all(ev(connection_event(minutes=0)))
    later = ledger.apply(ev(read_completed(minutes=20, initial=True)))
    earlier = ledger.apply(ev(read_completed(minutes=10, initial=True)))
    assert ledger.connections[CONNECTION].initial_read_completed_at == at(10)
    assert [c.kind for c in later][0] == "connection.updated" and [c.kind for c in later][-1] == FIRST_READ
    assert FIRST_READ not in [c.kind for c in earlier]  # the time moved, but it is not the first time


def test_an_ordinary_read_is_not_the_first_read() -> None:
    ledger = MemoryLedger()
    changes = ledger.apply(ev(read_completed(minutes=10)))
    assert ledger.connections[CONNECTION].initial_read_completed_at is None
    assert FIRST_READ not in [c.kind for c in changes]


def test_the_same_initial_read_folded_again_announces_nothing() -> None:
    body = read_completed(minutes=10, initial=True)
    ledger = fold_all(ev(body))
    assert ledger.apply(ev(body)) == []
    assert FIRST_READ not in [c.kind for c in ledger.apply(ev(body, message_id="another-delivery"))]


def test_an_initial_read_names_every_connection_of_its_results() -> None:
    body = read_completed(minutes=10, initial=True)
    body["payload"]["dataTypes"].append({**body["payload"]["dataTypes"][0], "connectionId": "c2"})
    ledger = MemoryLedger()
    changes = ledger.apply(ev(body))
    assert {c.connection_id for c in changes if c.kind == FIRST_READ} == {CONNECTION, "c2"}
    assert ledger.connections["c2"].initial_read_completed_at == at(10)


def test_a_link_failure_takes_its_reason_from_the_first_active_error() -> None:
    errors = [
        connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=2),
        connection_error("403", "User cancelled linking", status_text="Forbidden"),
    ]
    conn = fold_all(ev(connection_event("connection.failed", minutes=5, errors=errors))).connections[CONNECTION]
    assert conn.last_link_failure_at == at(5)
    assert conn.last_link_failure == {
        "status_code": "403",
        "status_text": "Forbidden",
        "message": "User cancelled linking",
    }


def test_a_link_failure_with_only_resolved_errors_takes_the_first_and_without_errors_says_nothing_more() -> None:
    resolved = [connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=2)]
    conn = fold_all(ev(connection_event("connection.failed", minutes=5, errors=resolved))).connections[CONNECTION]
    assert conn.last_link_failure == {"status_code": "500", "status_text": "Forbidden", "message": "Bank unavailable"}
    bare = fold_all(ev(connection_event("connection.failed", minutes=5))).connections[CONNECTION]
    assert bare.last_link_failure_at == at(5)
    assert bare.last_link_failure == {"status_code": None, "status_text": None, "message": None}


def test_the_latest_link_failure_wins_in_either_order_and_outlives_a_later_link() -> None:
    old = ev(connection_event("connection.failed", minutes=5, errors=[connection_error("403", "User cancelled")]))
    new = ev(connection_event("connection.failed", minutes=9, errors=[connection_error("401", "Wrong password")]))
    linked = ev(connection_event("connection.connected", minutes=12))
    for order in ([old, new, linked], [linked, new, old], [new, linked, old]):
        conn = fold_all(*order).connections[CONNECTION]
        assert conn.status == "Linked"
        assert conn.last_link_failure_at == at(9)
        assert conn.last_link_failure is not None and conn.last_link_failure["message"] == "Wrong password"


def test_other_connection_events_leave_the_link_failure_alone() -> None:
    ledger = fold_all(ev(connection_event("connection.connected", errors=[connection_error()])))
    conn = ledger.connections[CONNECTION]
    assert (conn.last_link_failure_at, conn.last_link_failure) == (None, None)
