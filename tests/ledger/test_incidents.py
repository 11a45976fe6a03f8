"""Platform incidents derived from results alone (`workers.ledger.incidents`): when one opens and closes, what it
counts, and that deriving in steps (as the checks do) finds what deriving once over everything finds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from workers.ledger.incidents import Incident, IncidentPolicy, Result, derive

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)
POLICY = IncidentPolicy(WINDOW, min_connections=5, failure_share=0.5)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def failed(minutes: float, connection: str, company: str, data_type: str = "invoices") -> Result:
    return Result(at(minutes), connection, company, data_type, True)


def ok(minutes: float, connection: str, company: str = "c-ok", data_type: str = "invoices") -> Result:
    return Result(at(minutes), connection, company, data_type, False)


def outage(minutes: float = 0, connections: int = 5, companies: int = 2) -> list[Result]:
    """One failure per connection, a minute apart, the connections spread over `companies`."""
    return [failed(minutes + i, f"conn-{i}", f"company-{i % companies}") for i in range(connections)]


def summary(incidents: list[Incident]) -> list[tuple[datetime, datetime | None]]:
    return [(i.opened_at, i.closed_at) for i in incidents]


def test_an_incident_opens_with_the_failure_that_reaches_every_threshold() -> None:
    (incident,) = derive("xero", outage(), POLICY, at(-30), at(10))
    assert (incident.opened_at, incident.closed_at) == (at(4), None)
    assert (incident.affected_connections, incident.data_types, incident.failure_share) == (5, ["invoices"], 1.0)


def test_one_connection_short_two_few_companies_or_too_small_a_share_opens_nothing() -> None:
    assert derive("xero", outage(connections=4), POLICY, at(-30), at(10)) == []
    assert derive("xero", outage(companies=1), POLICY, at(-30), at(10)) == []
    healthy = [ok(-1, f"ok-{i}") for i in range(6)]  # 5 failures of 11 results
    assert derive("xero", outage() + healthy, POLICY, at(-30), at(10)) == []
    assert len(derive("xero", outage() + healthy[:5], POLICY, at(-30), at(10))) == 1  # exactly half


def test_auth_errors_are_not_failures_of_the_platform() -> None:
    refused = [Result(at(i), f"conn-{i}", f"company-{i % 2}", "invoices", False) for i in range(5)]
    assert derive("xero", refused, POLICY, at(-30), at(10)) == []


def test_it_closes_when_the_share_falls_below_half_the_threshold() -> None:
    results = outage() + [ok(6 + i / 10, f"ok-{i}") for i in range(16)]  # share 5/21 once all are in
    (incident,) = derive("xero", results, POLICY, at(-30), at(10))
    # At 5/20 the share is a quarter, not below it; the sixteenth success closes it.
    assert (incident.opened_at, incident.closed_at) == (at(4), at(7.5))


def test_it_closes_when_its_failures_leave_the_window_and_counts_failures_until_then() -> None:
    results = [*outage(), failed(12, "conn-late", "company-9", "bills")]
    (incident,) = derive("xero", results, POLICY, at(-30), at(40))
    assert incident.closed_at == at(12) + WINDOW  # the last failure left the window
    assert (incident.affected_connections, incident.data_types) == (6, ["bills", "invoices"])
    assert incident.failures[("conn-late", "bills")] == ("company-9", at(12))


def test_the_same_outage_gives_the_same_incident_id_and_another_platform_another() -> None:
    first = derive("xero", outage(), POLICY, at(-30), at(10))[0]
    again = derive("xero", list(reversed(outage())), POLICY, at(-5), at(20))[0]
    assert first.id == again.id
    assert derive("sage", outage(), POLICY, at(-30), at(10))[0].id != first.id


def test_deriving_in_steps_finds_what_deriving_once_finds() -> None:
    rng = random.Random(7)
    results = []
    for minute in range(0, 180):
        bad = 40 <= minute < 70 or 120 <= minute < 130
        for n in range(rng.randint(0, 3)):
            conn = f"conn-{rng.randint(0, 11)}"
            fails = rng.random() < (0.9 if bad else 0.05)
            results.append(Result(at(minute + n / 10), conn, f"company-{conn[-1]}", "invoices", fails))
    once = derive("xero", results, POLICY, at(-30), at(200))
    assert len(once) >= 2

    # What a check at each moment does: start from the open incident, else from the last close or two windows back.
    found: dict[str, Incident] = {}
    for step in range(0, 201, 3):
        now = at(step)
        latest = max(found.values(), key=lambda i: i.opened_at, default=None)
        start, open_since = now - 2 * WINDOW, None
        if latest is not None and latest.closed_at is None:
            start, open_since = latest.opened_at, (latest.opened_at, latest.failure_share)
        elif latest is not None and latest.closed_at is not None:
            start = max(start, latest.closed_at)
        seen = [r for r in results if start - WINDOW < r.completed_at <= now]
        for incident in derive("xero", seen, POLICY, start, now, open_since):
            found[incident.id] = incident
    assert summary(sorted(found.values(), key=lambda i: i.opened_at)) == summary(once)
    assert [i.affected_connections for i in sorted(found.values(), key=lambda i: i.opened_at)] == [
        i.affected_connections for i in once
    ]
