"""Freshness: is a connection's data current? A pure function of ledger rows, thresholds and `now`. A data type is
``fresh`` or ``overdue`` by its last success against its threshold (override, else Codat's schedule times a factor,
else the default), ``pending`` or ``never`` by the link time without one, ``paused`` when no sync is expected; a
connection is as stale as its stalest counted data type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.settings import Settings
from schemas.statuses import Freshness, ThresholdSource
from workers.ledger.rows import ConnectionRow, DataTypeRow

NOT_EXPECTED_STATUSES = frozenset({"PendingAuth", "Unlinked", "Deauthorized"})
"""Connection statuses under which no sync is expected."""

SEVERITY: dict[Freshness, int] = {"paused": 0, "fresh": 1, "pending": 2, "never": 3, "overdue": 4}
"""Worst wins: a connection is as stale as its stalest data type."""


@dataclass(frozen=True)
class Schedules:
    """Codat's `syncSchedule` per data type, in hours: the client's, and one company's as Codat returned them."""

    client: Mapping[str, float] = field(default_factory=dict)
    company: Mapping[str, float] = field(default_factory=dict)


NO_SCHEDULES = Schedules()


@dataclass(frozen=True, slots=True)
class Threshold:
    seconds: float
    source: ThresholdSource


@dataclass(frozen=True)
class FreshnessPolicy:
    """How old a successful sync may be (`after_seconds`, per-type `overrides`, Codat's schedules times
    `schedule_factor` when `follow_schedules`), and how long without a sync before Codat may deauthorize."""

    after_seconds: float = 86_400.0
    overrides: Mapping[str, float] = field(default_factory=dict)
    schedule_factor: float = 1.5
    follow_schedules: bool = False
    deauthorize_after_seconds: float = 90 * 86_400.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FreshnessPolicy:
        return cls(
            settings.freshness_after_seconds,
            dict(settings.freshness_overrides),
            settings.freshness_schedule_factor,
            bool(settings.codat_api_key),
            settings.deauthorize_after_seconds,
        )

    @property
    def deauthorize_after(self) -> timedelta:
        return timedelta(seconds=self.deauthorize_after_seconds)

    def threshold(self, data_type: str | None = None) -> timedelta:
        """The threshold of `data_type` without schedules: its override, else `after_seconds`."""
        seconds = self.overrides.get(data_type, self.after_seconds) if data_type else self.after_seconds
        return timedelta(seconds=seconds)

    def threshold_of(self, data_type: str, schedules: Schedules = NO_SCHEDULES) -> Threshold:
        """The threshold of `data_type` and where it comes from, first that applies (see the module)."""
        if data_type in self.overrides:
            return Threshold(self.overrides[data_type], "override")
        if self.follow_schedules:
            client, company = schedules.client.get(data_type), schedules.company.get(data_type)
            # A company's setting is its own only where it differs from the client's.
            if company and company != client:
                return Threshold(company * 3600 * self.schedule_factor, "company_schedule")
            if client:
                return Threshold(client * 3600 * self.schedule_factor, "client_schedule")
        return Threshold(self.after_seconds, "default")


@dataclass(frozen=True, slots=True)
class DataTypeFreshness:
    data_type: str
    freshness: Freshness
    expected_by: datetime | None
    threshold: Threshold


@dataclass(frozen=True, slots=True)
class ConnectionFreshness:
    freshness: Freshness
    expected_by: datetime | None
    overdue_data_types: tuple[str, ...]
    data_types: tuple[DataTypeFreshness, ...] = ()
    """One per data type, sorted by name."""

    def of(self, data_type: str) -> DataTypeFreshness | None:
        return next((d for d in self.data_types if d.data_type == data_type), None)


def is_paused(connection: ConnectionRow) -> bool:
    return connection.deleted_at is not None or connection.status in NOT_EXPECTED_STATUSES


def _awaiting_first(linked: datetime | None, threshold: timedelta, now: datetime) -> tuple[Freshness, datetime | None]:
    """`pending` until linked time + threshold, `never` after (and without a linked time)."""
    if linked is None:
        return "never", None
    deadline = linked + threshold
    return ("pending", deadline) if now <= deadline else ("never", None)


def data_type_freshness(
    connection: ConnectionRow,
    row: DataTypeRow,
    policy: FreshnessPolicy,
    now: datetime,
    schedules: Schedules = NO_SCHEDULES,
) -> DataTypeFreshness:
    """One data type's freshness at `now`."""
    threshold = policy.threshold_of(row.data_type, schedules)
    if is_paused(connection) or row.phase == "unsupported":
        return DataTypeFreshness(row.data_type, "paused", None, threshold)
    last = row.last_successful_sync_at
    if last is not None:
        deadline = last + timedelta(seconds=threshold.seconds)
        return DataTypeFreshness(row.data_type, "fresh" if now <= deadline else "overdue", deadline, threshold)
    linked = connection.linked_at or connection.created_at
    state, first_deadline = _awaiting_first(linked, timedelta(seconds=threshold.seconds), now)
    return DataTypeFreshness(row.data_type, state, first_deadline, threshold)


def assess(
    connection: ConnectionRow,
    data_types: Iterable[DataTypeRow],
    policy: FreshnessPolicy,
    now: datetime,
    schedules: Schedules = NO_SCHEDULES,
) -> ConnectionFreshness:
    """The connection's freshness and each of its data types', at `now`; with no data type counted yet, judged by
    its linked (or created) time and the default threshold."""
    types = tuple(
        sorted(
            (data_type_freshness(connection, row, policy, now, schedules) for row in data_types),
            key=lambda d: d.data_type,
        )
    )
    if is_paused(connection):
        return ConnectionFreshness("paused", None, (), types)
    counted = [d for d in types if d.freshness != "paused"]
    if not counted:
        state, deadline = _awaiting_first(connection.linked_at or connection.created_at, policy.threshold(), now)
        return ConnectionFreshness(state, deadline, (), types)
    worst = max((d.freshness for d in counted), key=SEVERITY.__getitem__)
    deadlines = [d.expected_by for d in counted if d.expected_by is not None]
    overdue = tuple(d.data_type for d in counted if d.freshness == "overdue")
    return ConnectionFreshness(worst, min(deadlines) if deadlines else None, overdue, types)


DEFAULT_POLICY = FreshnessPolicy()
