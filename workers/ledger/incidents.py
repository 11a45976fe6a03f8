"""Platform incidents, derived purely from one platform's results. An incident opens at the first moment the window
``(t - window, t]`` holds failures (not ``AuthError``) from `min_connections` connections of `MIN_COMPANIES` companies
making `failure_share` of its results; it closes when the share falls below half that or no failure is left. Only
result times and one window after them are looked at: the window changes at no other moment."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MIN_COMPANIES = 2
"""An incident needs failures from this many companies: one company's failures are its own problem."""


@dataclass(frozen=True, slots=True)
class Result:
    """One finished sync of a platform's connection."""

    completed_at: datetime
    connection_id: str
    company_id: str
    data_type: str
    failed: bool
    """A failure other than ``AuthError``."""


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    window: timedelta
    min_connections: int
    failure_share: float


@dataclass(slots=True)
class Incident:
    platform_key: str
    opened_at: datetime
    failure_share: float
    """The failure share of the window that opened it."""
    closed_at: datetime | None = None
    failures: dict[tuple[str, str], tuple[str, datetime]] = field(default_factory=dict)
    """(connection, data type) -> (company, its latest failure counted)."""

    @property
    def id(self) -> str:
        """The same for the same platform and opening moment, so deriving again finds the same incident."""
        opened = self.opened_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return "inc_" + hashlib.sha256(f"{self.platform_key}\n{opened}".encode()).hexdigest()[:24]

    @property
    def data_types(self) -> list[str]:
        return sorted({data_type for _, data_type in self.failures})

    @property
    def affected_connections(self) -> int:
        return len({connection_id for connection_id, _ in self.failures})


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What the rules read of a window: its results, its failures, and the connections and companies failing."""

    total: int
    failures: int
    connections: int
    companies: int

    @property
    def share(self) -> float:
        return self.failures / self.total if self.total else 0.0

    def opens(self, policy: IncidentPolicy) -> bool:
        return (
            self.connections >= policy.min_connections
            and self.companies >= MIN_COMPANIES
            and self.share >= policy.failure_share
        )

    def closes(self, policy: IncidentPolicy) -> bool:
        return self.failures == 0 or self.share < policy.failure_share / 2


@dataclass(slots=True)
class _Window:
    """The results of the window at one moment, counted as they enter and leave it."""

    total: int = 0
    failures: int = 0
    connections: Counter[str] = field(default_factory=Counter)
    companies: Counter[str] = field(default_factory=Counter)

    def add(self, result: Result, sign: int) -> None:
        self.total += sign
        if result.failed:
            self.failures += sign
            self.connections[result.connection_id] += sign
            self.companies[result.company_id] += sign

    def counts(self) -> WindowCounts:
        connections = sum(1 for n in self.connections.values() if n > 0)
        companies = sum(1 for n in self.companies.values() if n > 0)
        return WindowCounts(self.total, self.failures, connections, companies)


def derive(
    platform_key: str,
    results: Iterable[Result],
    policy: IncidentPolicy,
    start: datetime,
    now: datetime,
    open_since: tuple[datetime, float] | None = None,
) -> list[Incident]:
    """The platform's incidents from `start` to `now`, oldest first, from every result completed in
    ``(start - window, now]``; `open_since`: (opening moment, failure share) of an incident open at `start`."""
    ordered = sorted(results, key=lambda r: r.completed_at)
    moments = sorted(
        {t for r in ordered for t in (r.completed_at, r.completed_at + policy.window) if start <= t <= now}
    )
    incidents: list[Incident] = []
    current = Incident(platform_key, *open_since) if open_since is not None else None
    if current is not None:
        incidents.append(current)
    window = _Window()
    entered = left = 0
    for t in moments:
        while entered < len(ordered) and ordered[entered].completed_at <= t:
            window.add(ordered[entered], 1)
            entered += 1
        while left < entered and ordered[left].completed_at <= t - policy.window:
            window.add(ordered[left], -1)
            left += 1
        counts = window.counts()
        if current is None and counts.opens(policy):
            current = Incident(platform_key, t, round(counts.share, 4))
            incidents.append(current)
        elif current is not None and counts.closes(policy):
            current.closed_at = t
            current = None
    for incident in incidents:
        _count_failures(incident, ordered, policy.window)
    return incidents


def _count_failures(incident: Incident, results: Sequence[Result], window: timedelta) -> None:
    since = incident.opened_at - window
    for r in results:
        if r.failed and since < r.completed_at and (incident.closed_at is None or r.completed_at <= incident.closed_at):
            incident.failures[(r.connection_id, r.data_type)] = (r.company_id, r.completed_at)
