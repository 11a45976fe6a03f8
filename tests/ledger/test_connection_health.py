"""Health alone: one state, one reason, one next step, a pure function of ledger rows (unit and property tests)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Event
from schemas.statuses import HEALTH
from tests.ledger.test_fold import CONNECTIONS, codat_events, ev, fold_all
from tests.support.builders import CONNECTION, at, connection_error, connection_event, read_completed
from workers.ledger.connection_health import RULES, ConnectionHealth, deauthorization_risk_at, judge
from workers.ledger.memory import MemoryLedger
from workers.ledger.rows import ConnectionRow, DataTypeRow


def health_of(ledger: MemoryLedger, connection_id: str = CONNECTION) -> ConnectionHealth:
    conn = ledger.connections[connection_id]
    types = [row for (cid, _), row in ledger.data_type_rows().items() if cid == connection_id]
    active = any(s.phase == "active" and s.connection_id == connection_id for s in ledger.sync_rows().values())
    return judge(conn, types, active)


def xero(event_type: str = "connection.connected", minutes: float = 0, **kwargs: object) -> Event:
    return ev(connection_event(event_type, minutes=minutes, platform="Xero", **kwargs))  # type: ignore[arg-type]


def test_the_rules_are_tried_in_the_documented_order() -> None:
    assert tuple(rule.health for rule in RULES) == HEALTH
    assert [rule.next_action for rule in RULES] == [
        "none",
        "reconnect",
        "reconnect",
        "reconnect",
        "reconnect",
        "wait",
        "refresh",
        "wait",
        "none",
    ]


def test_a_linked_connection_whose_reads_succeeded_is_healthy() -> None:
    health = health_of(fold_all(xero(), ev(read_completed([("invoices", "Complete")], minutes=10))))
    assert (health.health, health.next_action, health.data_type) == ("healthy", "none", None)
    assert health.reason == "Xero is linked and nothing needs doing."


def test_a_linked_connection_with_a_sync_running_is_syncing_and_the_customer_waits() -> None:
    health = health_of(fold_all(xero()))  # the link opened a sync of every data type
    assert (health.health, health.next_action) == ("syncing", "wait")
    assert "Xero" in health.reason


def test_a_failed_data_type_makes_the_connection_failing_naming_the_data_type_and_the_platform() -> None:
    ledger = fold_all(xero(), ev(read_completed([("invoices", "FetchError"), ("bills", "Complete")], minutes=10)))
    health = health_of(ledger)
    assert (health.health, health.next_action, health.data_type) == ("failing", "refresh", "invoices")
    assert health.reason == "Syncing invoices from Xero failed (FetchError): a refresh may fix it."


def test_a_failure_an_open_incident_of_its_platform_counts_asks_the_customer_only_to_wait() -> None:
    ledger = fold_all(xero(), ev(read_completed([("invoices", "FetchError")], minutes=10)))
    conn = ledger.connections[CONNECTION]
    types = [row for (cid, _), row in ledger.data_type_rows().items() if cid == CONNECTION]
    health = judge(conn, types, False, incident_since=at(5))
    assert (health.health, health.next_action, health.data_type) == ("platform_incident", "wait", "invoices")
    assert health.reason.startswith("Xero is having problems")
    # A failure from before the incident's window is the connection's own: refresh it.
    assert judge(conn, types, False, incident_since=at(10)).health == "failing"


def test_an_incident_does_not_hide_an_auth_error_or_touch_a_healthy_connection() -> None:
    refused = fold_all(xero(), ev(read_completed([("invoices", "AuthError")], minutes=10)))
    conn = refused.connections[CONNECTION]
    types = [row for (cid, _), row in refused.data_type_rows().items() if cid == CONNECTION]
    assert judge(conn, types, False, incident_since=at(5)).health == "needs_reauth"
    fine = fold_all(xero(), ev(read_completed([("invoices", "Complete")], minutes=10)))
    conn = fine.connections[CONNECTION]
    types = [row for (cid, _), row in fine.data_type_rows().items() if cid == CONNECTION]
    assert judge(conn, types, False, incident_since=at(5)).health == "healthy"


def test_a_later_success_of_the_failed_data_type_heals_the_connection() -> None:
    ledger = fold_all(
        xero(),
        ev(read_completed([("invoices", "FetchError")], minutes=10)),
        ev(read_completed([("invoices", "Complete")], minutes=20)),
    )
    assert health_of(ledger).health == "healthy"


def test_an_auth_error_needs_the_customer_to_sign_in_again() -> None:
    ledger = fold_all(xero(), ev(read_completed([("invoices", "AuthError"), ("bills", "FetchError")], minutes=10)))
    health = health_of(ledger)
    assert (health.health, health.next_action, health.data_type) == ("needs_reauth", "reconnect", "invoices")
    assert health.reason == "Xero refused access while syncing invoices: the customer must sign in to Xero again."


def test_results_before_the_latest_reconnect_do_not_count() -> None:
    auth_error = ev(read_completed([("invoices", "AuthError")], minutes=10))
    reconnected = xero("connection.reconnected", minutes=30)
    after = ev(read_completed([("bills", "Complete")], minutes=40))
    for order in ([auth_error, reconnected, after], [after, reconnected, auth_error], [reconnected, auth_error, after]):
        ledger = fold_all(xero(), *order)
        assert ledger.connections[CONNECTION].last_linked_at == at(30)
        assert health_of(ledger).health == "healthy"


def test_an_active_403_error_on_a_linked_connection_needs_reauth_and_a_resolved_one_does_not() -> None:
    active = fold_all(xero(errors=[connection_error("403", "Token revoked")]), ev(read_completed(minutes=10)))
    health = health_of(active)
    assert (health.health, health.next_action) == ("needs_reauth", "reconnect")
    assert "403" in health.reason and "Token revoked" in health.reason
    resolved = fold_all(
        xero(errors=[connection_error("401", status="Resolved", resolved_minutes=5)]), ev(read_completed(minutes=10))
    )
    assert health_of(resolved).health == "healthy"
    other = fold_all(xero(errors=[connection_error("500", "Bank unavailable")]), ev(read_completed(minutes=10)))
    assert health_of(other).health == "healthy"


@pytest.mark.parametrize(
    ("status", "health", "action"),
    [("Unlinked", "unlinked", "reconnect"), ("Deauthorized", "needs_reauth", "reconnect")],
)
def test_a_disconnected_connection_is_reconnected_whatever_its_results(status: str, health: str, action: str) -> None:
    ledger = fold_all(
        xero(),
        ev(read_completed([("invoices", "FetchError")], minutes=10)),
        xero("connection.disconnected", minutes=20, status=status),
    )
    judged = health_of(ledger)
    assert (judged.health, judged.next_action) == (health, action)
    assert "Xero" in judged.reason


def test_a_connection_awaiting_its_link_is_pending_until_a_link_attempt_fails() -> None:
    pending = health_of(fold_all(xero("connection.created")))
    assert (pending.health, pending.next_action) == ("pending", "reconnect")
    assert pending.reason == "The customer has not finished linking Xero yet."
    failed = health_of(
        fold_all(xero("connection.created"), xero("connection.failed", minutes=5, errors=[connection_error("403")]))
    )
    assert (failed.health, failed.next_action) == ("link_failed", "reconnect")
    assert failed.reason == "Linking Xero failed (User cancelled linking): the customer can try again."


def test_a_deleted_connection_needs_nothing_whatever_else_is_true() -> None:
    ledger = fold_all(
        xero(),
        ev(read_completed([("invoices", "AuthError")], minutes=10)),
        xero("connection.deleted", minutes=20),
    )
    health = health_of(ledger)
    assert (health.health, health.next_action) == ("deleted", "none")
    assert health.reason == "The Xero connection was deleted."


def test_a_connection_without_a_platform_name_is_still_described() -> None:
    conn = ConnectionRow(id="c", company_id="co", status="Linked")
    types = [DataTypeRow("c", "bills", "co", "MapError", "failed", last_sync_at=at(5))]
    assert (
        judge(conn, types, False).reason == "Syncing bills from the platform failed (MapError): a refresh may fix it."
    )


def test_the_deauthorization_risk_is_the_last_sync_or_link_plus_the_allowance() -> None:
    allowance = timedelta(days=90)
    ledger = fold_all(xero(minutes=0), ev(read_completed(minutes=10)))
    assert deauthorization_risk_at(ledger.connections[CONNECTION], allowance) == at(10) + allowance
    ledger.apply(xero("connection.reconnected", minutes=30))
    assert deauthorization_risk_at(ledger.connections[CONNECTION], allowance) == at(30) + allowance
    ledger.apply(xero("connection.disconnected", minutes=40, status="Deauthorized"))
    assert deauthorization_risk_at(ledger.connections[CONNECTION], allowance) is None


# --- properties -------------------------------------------------------------------------------------


def _healths(events: list[Event]) -> dict[str, ConnectionHealth]:
    ledger = fold_all(*events)
    return {cid: health_of(ledger, cid) for cid in ledger.connections}


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(codat_events(), min_size=1, max_size=14, unique_by=lambda e: e.id),
    data=st.data(),
)
def test_the_order_events_arrived_in_does_not_change_health(events: list[Event], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(events)) + data.draw(st.lists(st.sampled_from(events), max_size=4))
    assert _healths(shuffled) == _healths(events)
    assert set(_healths(events)) <= set(CONNECTIONS)
