"""Bundles: a company's named sets of data types (`SYNCTRACK_BUNDLES`), judged across its Linked connections: a
member's latest success is the latest across them, fresh when fresh on any. A refresh is pending until every member
succeeded after it was asked for; the fold that sees that announces ``bundle.ready`` once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from schemas.api import format_time
from schemas.bundles import BUNDLE_READY, BundleOut
from workers.ledger.changes import FeedEntry
from workers.ledger.fold import Change
from workers.ledger.freshness import NO_SCHEDULES, FreshnessPolicy, data_type_freshness
from workers.ledger.tables import BundleRefresh, Connection, DataTypeState
from workers.ledger.views import company_schedules


@dataclass(frozen=True, slots=True)
class Member:
    """One member data type across a company's Linked connections."""

    latest_success: datetime | None
    fresh: bool
    connection_ids: tuple[str, ...]
    """The Linked connections that have it, in id order."""


def load_members(
    session: Session, company_id: str, data_types: Iterable[str], policy: FreshnessPolicy | None, now: datetime
) -> dict[str, Member]:
    """Each of `data_types` across the company's Linked connections; `fresh` is judged only with a `policy`. Rows
    are read afresh (`populate_existing`): a fold that waited for another's commit must see what it wrote."""
    wanted = sorted(set(data_types))
    linked = {
        conn.id: conn
        for conn in session.exec(
            select(Connection)
            .where(
                Connection.company_id == company_id,
                Connection.status == "Linked",
                col(Connection.deleted_at).is_(None),
            )
            .execution_options(populate_existing=True)
        )
    }
    rows = session.exec(
        select(DataTypeState)
        .where(col(DataTypeState.connection_id).in_(sorted(linked)), col(DataTypeState.data_type).in_(wanted))
        .order_by(col(DataTypeState.connection_id))
        .execution_options(populate_existing=True)
    ).all()
    schedules = company_schedules(session, [company_id], policy)[company_id] if policy else NO_SCHEDULES
    members = {}
    for data_type in wanted:
        mine = [row for row in rows if row.data_type == data_type]
        successes = [row.last_successful_sync_at for row in mine if row.last_successful_sync_at is not None]
        fresh = policy is not None and any(
            data_type_freshness(linked[row.connection_id], row, policy, now, schedules).freshness == "fresh"
            for row in mine
        )
        members[data_type] = Member(max(successes, default=None), fresh, tuple(row.connection_id for row in mine))
    return members


def as_of(members: Mapping[str, Member]) -> tuple[datetime | None, datetime | None]:
    """(earliest, latest) of the members' latest successful syncs; (None, None) unless every member has one."""
    times = [m.latest_success for m in members.values() if m.latest_success is not None]
    if not times or len(times) < len(members):
        return None, None
    return min(times), max(times)


def bundle_out(name: str, data_types: list[str], members: Mapping[str, Member]) -> BundleOut:
    earliest, latest = as_of({t: members[t] for t in data_types})
    return BundleOut(
        name=name,
        data_types=data_types,
        as_of=earliest,
        spread_seconds=(latest - earliest).total_seconds() if earliest and latest else None,
        stale_data_types=[t for t in data_types if not members[t].fresh],
        complete=earliest is not None and latest is not None,
    )


def load_bundles(
    session: Session, company_id: str, bundles: Mapping[str, list[str]], policy: FreshnessPolicy, now: datetime
) -> list[BundleOut]:
    """Every configured bundle of the company at `now`, in the order configured."""
    members = load_members(session, company_id, {t for types in bundles.values() for t in types}, policy, now)
    return [bundle_out(name, types, members) for name, types in bundles.items()]


def start_refresh(
    session: Session, company_id: str, bundle: str, data_types: list[str], at: datetime, actor: str | None
) -> BundleRefresh:
    """Record a refresh of the bundle requested `at`; the pending one before it is superseded."""
    session.execute(
        update(BundleRefresh)
        .where(
            col(BundleRefresh.company_id) == company_id,
            col(BundleRefresh.bundle) == bundle,
            col(BundleRefresh.status) == "pending",
        )
        .values(status="superseded")
    )
    refresh = BundleRefresh(company_id=company_id, bundle=bundle, data_types=data_types, requested_at=at, actor=actor)
    session.add(refresh)
    session.flush()
    return refresh


def announce_ready(session: Session, changes: list[Change], now: datetime) -> list[FeedEntry]:
    """``bundle.ready`` for each pending refresh of a company this fold completed a sync of, once every member
    succeeded since it was requested; marked ready in the same transaction, the refreshes locked in id order."""
    last_event = {c.sync.company_id: c.event_id or None for c in changes if c.kind == "sync.completed" and c.sync}
    if not last_event:
        return []
    pending = session.exec(
        select(BundleRefresh)
        .where(col(BundleRefresh.company_id).in_(sorted(last_event)), BundleRefresh.status == "pending")
        .order_by(col(BundleRefresh.id))
        .with_for_update()
    ).all()
    newest = {(refresh.company_id, refresh.bundle): refresh.id for refresh in pending}
    entries = []
    for refresh in pending:
        if newest[(refresh.company_id, refresh.bundle)] != refresh.id:
            continue  # two refreshes asked for at once: the newer one supersedes
        members = load_members(session, refresh.company_id, refresh.data_types, None, now)
        succeeded = all(
            m.latest_success is not None and m.latest_success >= refresh.requested_at for m in members.values()
        )
        if not succeeded:
            continue
        earliest, _ = as_of(members)
        refresh.status, refresh.ready_at, refresh.as_of = "ready", now, earliest
        session.add(refresh)
        data = {
            "company_id": refresh.company_id,
            "bundle": refresh.bundle,
            "data_types": refresh.data_types,
            "as_of": format_time(earliest) if earliest else None,
            "requested_at": format_time(refresh.requested_at),
            "event_id": last_event[refresh.company_id],
        }
        entries.append(FeedEntry(BUNDLE_READY, refresh.company_id, "", data))
    return entries
