"""Check platforms for incidents (`workers.ledger.incidents` derives them); record and announce what changed. Rows
are keyed by incident id and a close is written only over an open row, so concurrent checks announce each
``platform.incident_opened`` / ``_closed`` once; the platform's connections are then judged again."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVarTuple

from sqlalchemy import Engine, Select, case, distinct, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from schemas.api import IncidentOut
from schemas.settings import Settings
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.incidents import Incident, IncidentPolicy, Result, WindowCounts, derive
from workers.ledger.reassess import reassess
from workers.ledger.tables import CONNECTIONS, SYNCS, Connection, PlatformIncident, Sync
from workers.ledger.views import open_incidents

log = logging.getLogger("synctrack.incidents")
Ts = TypeVarTuple("Ts")

OPENED = "platform.incident_opened"
CLOSED = "platform.incident_closed"
RESULT_PHASES = ("succeeded", "failed", "unsupported")
NOT_COUNTED = "AuthError"
"""A failure the customer must fix (re-link): never a sign of the platform's trouble."""
COUNTED_FAILURE = (SYNCS.c.phase == "failed") & (SYNCS.c.status != NOT_COUNTED)


@dataclass(frozen=True, slots=True)
class IncidentSettings:
    policy: IncidentPolicy
    auto_refresh: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> IncidentSettings:
        policy = IncidentPolicy(
            timedelta(seconds=settings.incident_window_seconds),
            settings.incident_min_connections,
            settings.incident_failure_share,
        )
        return cls(policy, settings.incident_auto_refresh)


def incident_out(row: PlatformIncident) -> IncidentOut:
    return IncidentOut.model_validate(row, from_attributes=True)


def count_open_incidents(engine: Engine) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(PlatformIncident).where(col(PlatformIncident.closed_at).is_(None))
        return int(session.exec(query).one())


def platforms_to_check(engine: Engine, window: timedelta, now: datetime) -> list[str]:
    """Platforms with a result completed in the window before `now`, or an open incident."""
    recent = (
        select(Connection.platform_key)
        .join(Sync, col(Sync.connection_id) == Connection.id)
        .where(col(Sync.completed_at) > now - window, col(Connection.platform_key).is_not(None))
        .distinct()
    )
    with Session(engine) as session:
        keys = {key for key in session.exec(recent).all() if key} | set(open_incidents(session))
    return sorted(keys)


def check_incidents(
    engine: Engine,
    feed: ChangeFeed | None,
    incidents: IncidentSettings,
    freshness: FreshnessPolicy,
    now: datetime,
    platform_keys: Collection[str] | None = None,
) -> int:
    """Derive the incidents of `platform_keys` (every platform worth a look when None) up to `now`; record and
    announce the changes; return how many incidents opened or closed."""
    keys = platforms_to_check(engine, incidents.policy.window, now) if platform_keys is None else platform_keys
    changed = 0
    for key in sorted(keys):
        try:
            entries = _check_platform(engine, key, incidents, now)
        except IntegrityError:
            continue  # another worker recorded the same opening at the same time, and announces it
        if entries:
            changed += len(entries)
            if feed is not None:
                feed.publish(entries)
            reassess(engine, feed, freshness, now, platform_key=key)
    return changed


def check_after_fold(
    engine: Engine,
    feed: ChangeFeed | None,
    incidents: IncidentSettings,
    freshness: FreshnessPolicy,
    now: datetime,
    platform_keys: Collection[str],
) -> int:
    """`check_incidents` for those of `platform_keys` whose window ending `now` would open or close an incident: a
    fold costs one count per platform; the moments between folds are the periodic check's."""
    due = []
    with Session(engine) as session:
        opened = open_incidents(session)
        for key in sorted(platform_keys):
            counts = _window_counts(session, key, now - incidents.policy.window, now)
            if counts.closes(incidents.policy) if key in opened else counts.opens(incidents.policy):
                due.append(key)
    return check_incidents(engine, feed, incidents, freshness, now, due) if due else 0


def _in_window(query: Select[*Ts], key: str, after: datetime, now: datetime) -> Select[*Ts]:
    """`query` over the platform's results completed in ``(after, now]``."""
    s, c = SYNCS.c, CONNECTIONS.c
    return query.select_from(SYNCS.join(CONNECTIONS, c.id == s.connection_id)).where(
        c.platform_key == key, s.phase.in_(RESULT_PHASES), s.completed_at > after, s.completed_at <= now
    )


def _window_counts(session: Session, key: str, after: datetime, now: datetime) -> WindowCounts:
    s, failed = SYNCS.c, COUNTED_FAILURE
    counts = sa_select(
        func.count(),
        func.count(case((failed, 1))),
        func.count(distinct(case((failed, s.connection_id)))),
        func.count(distinct(case((failed, s.company_id)))),
    )
    return WindowCounts(*session.execute(_in_window(counts, key, after, now)).one())


def _check_platform(engine: Engine, key: str, incidents: IncidentSettings, now: datetime) -> list[FeedEntry]:
    policy = incidents.policy
    with Session(engine, expire_on_commit=False) as session, session.begin():
        known = session.exec(
            select(PlatformIncident)
            .where(PlatformIncident.platform_key == key)
            .order_by(col(PlatformIncident.opened_at).desc())
            .limit(1)
        ).first()
        open_since = None
        start = now - 2 * policy.window
        if known is not None and known.closed_at is None:
            open_since, start = (known.opened_at, known.failure_share), known.opened_at
        elif known is not None and known.closed_at is not None:
            start = max(start, known.closed_at)
        derived = derive(key, _results(session, key, start - policy.window, now), policy, start, now, open_since)
        name = session.exec(select(func.max(Connection.platform_name)).where(Connection.platform_key == key)).first()
        entries = []
        for incident in derived:
            entries += _record(session, incident, name, policy.window, incidents.auto_refresh)
    return entries


def _results(session: Session, key: str, after: datetime, now: datetime) -> list[Result]:
    s = SYNCS.c
    query = sa_select(s.completed_at, s.connection_id, s.company_id, s.data_type, COUNTED_FAILURE)
    rows = session.execute(_in_window(query, key, after, now))
    return [Result(at, cid, company_id, data_type, bool(failed)) for at, cid, company_id, data_type, failed in rows]


def _record(
    session: Session, incident: Incident, name: str | None, window: timedelta, auto_refresh: bool
) -> list[FeedEntry]:
    """Write one derived incident; the feed entries of what this call changed (an opening, a close)."""
    row = session.get(PlatformIncident, incident.id)
    entries = []
    derived = (incident.data_types, incident.affected_connections)
    if row is None:
        row = PlatformIncident(
            id=incident.id,
            platform_key=incident.platform_key,
            platform_name=name,
            data_types=incident.data_types,
            opened_at=incident.opened_at,
            failures_since=incident.opened_at - window,
            affected_connections=incident.affected_connections,
            failure_share=incident.failure_share,
        )
        session.add(row)
        session.flush()  # a second checker inserting the same id fails here, and its transaction with it
        entries.append(_entry(OPENED, row))
        log.info("msg=incident_opened incident=%s platform=%s share=%s", row.id, row.platform_key, row.failure_share)
    elif row.closed_at is None and (row.data_types, row.affected_connections) != derived:
        row.data_types, row.affected_connections = derived
        session.add(row)
    if incident.closed_at is not None and row.closed_at is None:
        closed = session.execute(
            update(PlatformIncident)
            .where(col(PlatformIncident.id) == incident.id, col(PlatformIncident.closed_at).is_(None))
            .values(
                closed_at=incident.closed_at,
                data_types=incident.data_types,
                affected_connections=incident.affected_connections,
                refresh_state="pending" if auto_refresh else "none",
            )
        )
        if closed.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(row)
            entries.append(_entry(CLOSED, row))
            log.info("msg=incident_closed incident=%s platform=%s", row.id, row.platform_key)
    return entries


def _entry(name: str, row: PlatformIncident) -> FeedEntry:
    return FeedEntry(name, "", "", incident_out(row).model_dump(mode="json"))
