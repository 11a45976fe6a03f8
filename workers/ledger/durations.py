"""How long a sync usually takes. A finished sync without its own `requested_at` answers the latest request (a link
webhook or an accepted refresh) of its data type, or of all, before its completion with no result between, within
`REQUEST_WINDOW`. An active sync's typical duration is the median of the latest `SAMPLE` succeeded syncs of its
connection and data type, else of its platform's; null with fewer than `MINIMUM`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, column, func, or_, values
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from schemas.api import as_utc
from schemas.events import ANY_DATA_TYPE
from workers.ledger.bulk_sql import chunked
from workers.ledger.rows import SyncRow
from workers.ledger.tables import SYNCS, AuditRecord, Connection, Sync, WebhookEvent

REQUEST_WINDOW = timedelta(days=7)
SAMPLE = 20
MINIMUM = 3
SCAN = 100
"""Succeeded syncs read (newest first) to find `SAMPLE` with both times."""
LINK_EVENTS = ("connection.connected", "connection.reconnected")
FINISHED = ("succeeded", "failed", "unsupported")

SyncLike = Sync | SyncRow


@dataclass(frozen=True, slots=True)
class Timing:
    """What a Sync object adds to its row."""

    requested_at: datetime | None = None
    typical_duration_seconds: float | None = None


@dataclass
class _Requests:
    """Request times of some connections, and result times of their data types, since one moment."""

    since: datetime
    requests: dict[str, list[tuple[str | None, datetime]]] = field(default_factory=dict)
    """connection -> (data type, or None for every type; time)."""
    previous: dict[str, datetime] = field(default_factory=dict)
    """sync id -> the latest finished sync of its connection and data type before it."""

    def requested(self, row: SyncLike) -> datetime | None:
        completed = row.completed_at
        if completed is None:
            return None
        before = self.previous.get(row.id)
        floor = max(before or self.since, completed - REQUEST_WINDOW)
        matching = [
            at
            for data_type, at in self.requests.get(row.connection_id, [])
            if data_type in (None, ANY_DATA_TYPE, row.data_type) and floor < at <= completed
        ]
        return max(matching, default=None)


class DurationMemo:
    """Typical durations remembered for `ttl_seconds` across a worker's folds (they move slowly)."""

    def __init__(self, ttl_seconds: float = 60.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._values: dict[tuple[str, str, str], tuple[float, float | None]] = {}

    def remembered(self, key: tuple[str, str, str], compute: Callable[[], float | None]) -> float | None:
        """The value of `key`, computed again once older than `ttl_seconds`."""
        found = self._values.get(key)
        if found is not None and found[0] >= time.monotonic():
            return found[1]
        if len(self._values) > 100_000:  # a bound on memory, not an eviction policy: the next reads refill it
            self._values.clear()
        value = compute()
        self._values[key] = (time.monotonic() + self.ttl_seconds, value)
        return value


def load_timings(
    session: Session,
    rows: Iterable[SyncLike],
    platforms: Mapping[str, str | None] | None = None,
    memo: DurationMemo | None = None,
) -> dict[str, Timing]:
    """The `Timing` of each of these syncs, by id; `platforms` (connection -> `platform_key`) spares reading
    those the caller holds."""
    rows = list(rows)
    finished = [r for r in rows if r.phase in FINISHED and r.requested_at is None and r.completed_at is not None]
    derived = derive_requested(session, finished)
    timings = {row.id: Timing(requested_at=derived.get(row.id)) for row in finished}
    active = [r for r in rows if r.phase == "active"]
    if active:
        typical = TypicalDurations(session, platforms, memo)
        for row in active:
            timings[row.id] = Timing(typical_duration_seconds=typical.of(row.connection_id, row.data_type))
    return timings


def derive_requested(session: Session, rows: Sequence[SyncLike]) -> dict[str, datetime]:
    """The request each finished sync answers, for those where one is known: read from the requests in the window
    of these rows, and their data types' latest results before them."""
    if not rows:
        return {}
    times = [r.completed_at for r in rows if r.completed_at is not None]
    until = max(times)
    since = min(times) - REQUEST_WINDOW
    known = _Requests(since)
    connection_ids = sorted({r.connection_id for r in rows})
    companies: dict[str, str] = {}
    for chunk in chunked(connection_ids):
        for cid, company_id in session.exec(
            select(Connection.id, Connection.company_id).where(col(Connection.id).in_(chunk))
        ).all():
            companies[cid] = company_id
        links = select(WebhookEvent.connection_id, WebhookEvent.generated_at).where(
            col(WebhookEvent.connection_id).in_(chunk),
            col(WebhookEvent.event_type).in_(LINK_EVENTS),
            col(WebhookEvent.outcome) == "processed",
            col(WebhookEvent.generated_at) >= since,
            col(WebhookEvent.generated_at) <= until,
        )
        for linked, at in session.exec(links).all():
            if linked is not None and at is not None:
                known.requests.setdefault(linked, []).append((None, at))
    by_company: dict[str, list[str]] = {}
    for cid, company_id in companies.items():
        by_company.setdefault(company_id, []).append(cid)
    for chunk in chunked(sorted(by_company)):
        refreshes = select(
            AuditRecord.company_id, AuditRecord.connection_id, AuditRecord.data_type, AuditRecord.at
        ).where(
            col(AuditRecord.company_id).in_(chunk),
            col(AuditRecord.action) == "refresh",
            col(AuditRecord.result) == "accepted",
            col(AuditRecord.at) >= since,
            col(AuditRecord.at) <= until,
            or_(col(AuditRecord.connection_id).is_(None), col(AuditRecord.connection_id).in_(connection_ids)),
        )
        for company_id, named, asked, at in session.exec(refreshes).all():
            for target in [named] if named else by_company.get(company_id, []):
                known.requests.setdefault(target, []).append((asked, at))
    # For each row of a connection that had a request, the latest finished sync of its data type before it.
    for some in chunked([r for r in rows if known.requests.get(r.connection_id)]):
        for sync_id, at in _previous_results(session, some):
            if at is not None:
                known.previous[sync_id] = as_utc(at)
    found = {row.id: known.requested(row) for row in rows}
    return {sync_id: at for sync_id, at in found.items() if at is not None}


PREVIOUS_RESULTS_SQL = """
SELECT w.id, (SELECT max(s.sort_at) FROM syncs s
              WHERE s.connection_id = w.connection_id AND s.data_type = w.data_type
                AND s.phase = ANY(%s) AND s.sort_at < w.completed_at)
FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamptz[])
     AS w(id, connection_id, data_type, completed_at)
"""
"""PostgreSQL: the rows bound as arrays (one plan, nothing to compile)."""


def _previous_results(session: Session, rows: Sequence[SyncLike]) -> Iterable[tuple[str, datetime | None]]:
    if session.get_bind().dialect.name == "postgresql":
        arrays = ([r.id for r in rows], [r.connection_id for r in rows], [r.data_type for r in rows])
        parameters = (list(FINISHED), *arrays, [r.completed_at for r in rows])
        return [(row[0], row[1]) for row in session.connection().exec_driver_sql(PREVIOUS_RESULTS_SQL, parameters)]
    wanted = (
        values(
            column("id", String),
            column("connection_id", String),
            column("data_type", String),
            column("completed_at", SYNCS.c.sort_at.type),
            name="wanted",
        )
        .data([(r.id, r.connection_id, r.data_type, r.completed_at) for r in rows])
        .cte()
    )
    latest = (
        sa_select(func.max(SYNCS.c.sort_at))
        .where(
            SYNCS.c.connection_id == wanted.c.connection_id,
            SYNCS.c.data_type == wanted.c.data_type,
            SYNCS.c.phase.in_(FINISHED),
            SYNCS.c.sort_at < wanted.c.completed_at,
        )
        .scalar_subquery()
    )
    return [(row[0], row[1]) for row in session.execute(sa_select(wanted.c.id, latest))]


class TypicalDurations:
    """Typical durations, each (connection, data type) and (platform, data type) read once per instance."""

    def __init__(
        self, session: Session, platforms: Mapping[str, str | None] | None = None, memo: DurationMemo | None = None
    ) -> None:
        self.session = session
        self._memo = memo or DurationMemo(ttl_seconds=float("inf"))
        self._platforms: dict[str, str | None] = dict(platforms or {})

    def of(self, connection_id: str, data_type: str) -> float | None:
        if data_type == ANY_DATA_TYPE:
            # A read of every data type never stays in the ledger as a finished sync (the first result closes it
            # and stands in its place), so it has no history to take a median of.
            return None
        own = self._memo.remembered(
            ("connection", connection_id, data_type),
            lambda: self._median(select(Sync).where(Sync.connection_id == connection_id), data_type),
        )
        if own is not None:
            return own
        if connection_id not in self._platforms:
            self._platforms[connection_id] = self.session.exec(
                select(Connection.platform_key).where(Connection.id == connection_id)
            ).first()
        platform = self._platforms[connection_id]
        if platform is None:
            return None
        across = select(Sync).join(Connection, col(Connection.id) == Sync.connection_id)
        return self._memo.remembered(
            ("platform", platform, data_type),
            lambda: self._median(across.where(Connection.platform_key == platform), data_type),
        )

    def _median(self, query: Any, data_type: str) -> float | None:
        statement = (
            query.where(Sync.data_type == data_type, Sync.phase == "succeeded", col(Sync.completed_at).is_not(None))
            .order_by(col(Sync.sort_at).desc(), col(Sync.id).desc())
            .limit(SCAN)
        )
        rows = list(self.session.exec(statement).all())
        derived = derive_requested(self.session, [r for r in rows if r.requested_at is None])
        durations = []
        for row in rows:
            requested = row.requested_at or derived.get(row.id)
            if requested is not None and row.completed_at is not None and row.completed_at >= requested:
                durations.append((row.completed_at - requested).total_seconds())
            if len(durations) == SAMPLE:
                break
        return float(statistics.median(durations)) if len(durations) >= MINIMUM else None


def expected_completion(requested_at: datetime | None, typical_seconds: float | None) -> datetime | None:
    if requested_at is None or typical_seconds is None:
        return None
    return requested_at + timedelta(seconds=typical_seconds)
