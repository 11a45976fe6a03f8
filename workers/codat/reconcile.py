"""Reconciliation: read what Codat says now and fold what differs, so the ledger converges if webhooks were lost.

Per company, Codat's connections, pull-operation history (back `SYNCTRACK_RECONCILE_LOOKBACK_HOURS`) and
`dataStatus` become `Event`s of source `reconcile`, folded as webhooks are, one transaction per company. Each
finished operation the ledger lacked is a webhook that never arrived, recorded as missed. A second run changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from schemas import normalise
from schemas.api import as_utc
from schemas.codat import PullOperation, data_status, pull_operation
from schemas.events import ConnectionFacts, Event, InvalidEnvelope, connection_facts
from schemas.settings import Settings
from schemas.statuses import phase_of
from workers.codat.client import PAGE_SIZE, CodatClient, codat_client
from workers.codat.errors import GIVE_UP, CodatError
from workers.codat.sync_settings import refresh_settings
from workers.ledger.announce import announce_changes, company_names
from workers.ledger.audit import erase_raw_events
from workers.ledger.bulk_sql import chunked
from workers.ledger.changes import ChangeFeed, FeedEntry
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.missed import record_missed
from workers.ledger.rows import OPEN_PHASES
from workers.ledger.store import fold_events
from workers.ledger.tables import SYNCS, Company, Connection
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.reconcile")

WEBHOOK_SLACK = timedelta(minutes=10)
MAX_HISTORY_PAGES = 50


@dataclass
class CompanyReport:
    company_id: str
    connections: int = 0
    operations: int = 0
    folded: int = 0
    """Events folded (what differed from the ledger)."""
    changes: int = 0
    """Changes the fold made (what the stream announced)."""
    missed: int = 0
    """Results folded that no webhook had reported."""
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"company={self.company_id} result=error error={self.error!r}"
        return (
            f"company={self.company_id} result=ok connections={self.connections} "
            f"operations={self.operations} folded={self.folded} changes={self.changes} missed={self.missed}"
        )


@dataclass(frozen=True)
class CodatView:
    """What Codat said about one company, read before anything is folded."""

    observed_at: datetime
    connections: list[dict[str, Any]]
    deleted: list[str]
    operations: list[PullOperation]
    company: dict[str, Any] | None = None
    """The company object itself (`name`, `description`, `tags`), when it was read."""


@dataclass(frozen=True)
class Applied:
    """What folding a view did: events folded, of which syncs, the feed entries, and the results no webhook had
    reported (missed)."""

    folded: int
    syncs: int
    entries: list[FeedEntry]
    missed: int = 0


async def read_company(
    client: CodatClient, engine: Engine, company_id: str, lookback: timedelta, company: dict[str, Any] | None = None
) -> CodatView:
    """Read one company from Codat; `company` when already read, e.g. from the account's list of companies,
    whose `dataConnections` spare listing its connections."""
    observed_at = datetime.now(UTC)
    listed = (company or {}).get("dataConnections")
    connections = listed if isinstance(listed, list) else await client.list_connections(company_id)
    connections = [c for c in connections if isinstance(c, dict)]
    known = await asyncio.to_thread(_ledger_connection_ids, engine, company_id)
    deleted = []
    for connection_id in sorted(known - {c.get("id") for c in connections}):
        try:
            connections.append(await client.get_connection(company_id, connection_id))
        except CodatError as exc:
            if exc.status != 404:
                raise
            deleted.append(connection_id)
    operations = await _history(client, company_id, observed_at - lookback)
    seen = {op.id for op in operations}
    for status in data_status(await client.data_status(company_id)):
        if status.latest_sync_id and status.latest_sync_id not in seen:
            try:
                operations.append(pull_operation(await client.pull_operation(company_id, status.latest_sync_id)))
            except (CodatError, InvalidEnvelope) as exc:
                log.warning("company=%s dataset=%s msg=unreadable error=%s", company_id, status.latest_sync_id, exc)
            seen.add(status.latest_sync_id)
    return CodatView(observed_at, connections, deleted, operations, company)


async def _history(client: CodatClient, company_id: str, cutoff: datetime) -> list[PullOperation]:
    operations: list[PullOperation] = []
    for page in range(1, MAX_HISTORY_PAGES + 1):
        results, total = await client.pull_operations(company_id, page, PAGE_SIZE)
        for raw in results:
            try:
                operations.append(pull_operation(raw))
            except InvalidEnvelope as exc:
                log.warning("company=%s msg=unreadable_pull_operation error=%s", company_id, exc)
        oldest = min((op.requested for op in operations), default=cutoff)
        if len(results) < PAGE_SIZE or (total is not None and page * PAGE_SIZE >= total) or oldest < cutoff:
            break
    return [op for op in operations if op.requested >= cutoff or op.completed is None or op.completed >= cutoff]


def _ledger_connection_ids(engine: Engine, company_id: str) -> set[str]:
    with Session(engine) as session:
        query = select(Connection.id).where(Connection.company_id == company_id, col(Connection.deleted_at).is_(None))
        return set(session.exec(query).all())


def _connection_event(row: Connection | None, raw: dict[str, Any], company_id: str, at: datetime) -> Event | None:
    try:
        facts = connection_facts(raw)
    except InvalidEnvelope:
        return None
    if row is not None and row.deleted_at is not None:
        return None
    status_differs = row is None or (facts.status is not None and row.status != facts.status)
    details_differ = row is None or (
        (row.platform_key, row.platform_name, row.source_type, row.link_url, row.connection_info or None)
        != (facts.platform_key, facts.platform_name, facts.source_type, facts.link_url, facts.metadata or None)
        or (row.errors or []) != list(facts.errors or [])
    )
    if not status_differs and not details_differ:
        return None
    if not details_differ:
        facts = ConnectionFacts(id=facts.id, status=facts.status)
    elif not status_differs:
        facts = replace(facts, status=None)
    return _connection_change(f"{facts.id}:{at.isoformat()}", company_id, at, facts)


def _connection_change(key: str, company_id: str, at: datetime, facts: ConnectionFacts) -> Event:
    return Event(f"reconcile:{key}", "reconcile.connection", at, company_id, connections=(facts,), source="reconcile")


class LedgerSyncs:
    """What the ledger holds of a company's syncs, read once, to tell which pull operations it already knows."""

    def __init__(self, session: Session, connection_ids: Iterable[str]) -> None:
        self.phases: dict[str, str] = {}
        self.finished: dict[tuple[str, str], list[datetime]] = {}
        ids = sorted(set(connection_ids))
        table = SYNCS.c
        for chunk in chunked(ids):
            query = sql_select(table.id, table.connection_id, table.data_type, table.phase, table.completed_at).where(
                table.connection_id.in_(chunk)
            )
            for sync_id, connection_id, data_type, phase, completed_at in session.execute(query):
                self.phases[sync_id] = phase
                if phase not in OPEN_PHASES and completed_at is not None:
                    self.finished.setdefault((connection_id, data_type), []).append(as_utc(completed_at))
        for times in self.finished.values():
            times.sort()

    def knows(self, op: PullOperation) -> bool:
        """A sync with the operation's key, or — webhooks carry no dataset id — a finished sync of its
        connection and data type completed within its window (requested .. completed + `WEBHOOK_SLACK`)."""
        phase = self.phases.get(op.id)
        active = phase_of(op.status) == "active"
        if phase is not None and (phase not in OPEN_PHASES or active):
            return True
        if active:
            return False
        until = (op.completed or op.requested) + WEBHOOK_SLACK
        times = self.finished.get((op.connection_id, op.data_type), [])
        first = bisect_left(times, op.requested)
        return first < len(times) and times[first] <= until


def _company_event(row: Company | None, raw: dict[str, Any] | None, company_id: str, at: datetime) -> Event | None:
    """The company object as an event, when its name, description or tags differ from the ledger's."""
    if raw is None:
        return None
    name, description = normalise.text(raw.get("name")), normalise.text(raw.get("description"))
    tags = normalise.mapping(raw.get("tags"))
    if not name or (row is not None and (row.name, row.description, row.tags) == (name, description, tags)):
        return None
    return Event(
        f"reconcile:{company_id}:company:{at.isoformat()}",
        "reconcile.company",
        at,
        company_id,
        company_name=name,
        company_description=description,
        company_tags=tags,
        source="reconcile",
    )


def apply_view(
    engine: Engine, company_id: str, view: CodatView, freshness: FreshnessPolicy = DEFAULT_POLICY
) -> Applied:
    """Fold what differs, in one transaction; record the results folded as missed webhooks."""
    entries: list[FeedEntry] = []
    unknown: list[PullOperation] = []
    missed = 0
    with Session(engine, expire_on_commit=False) as session, session.begin():
        rows = {
            row.id: row for row in session.exec(select(Connection).where(Connection.company_id == company_id)).all()
        }
        at = view.observed_at
        events = [
            _connection_change(f"{c}:deleted", company_id, at, ConnectionFacts(c, deleted=True)) for c in view.deleted
        ]
        company_fact = _company_event(session.get(Company, company_id), view.company, company_id, at)
        if company_fact is not None:
            events.append(company_fact)
        for raw in view.connections:
            event = _connection_event(rows.get(str(raw.get("id"))), raw, company_id, at)
            if event is not None:
                events.append(event)
        gone = set(view.deleted) | {c for c, row in rows.items() if row.deleted_at is not None}
        known = LedgerSyncs(session, {*rows, *(op.connection_id for op in view.operations)})
        for op in sorted(view.operations, key=lambda o: (o.connection_id, o.requested, o.id)):
            if op.company_id == company_id and op.connection_id not in gone and not known.knows(op):
                events.append(op.reconcile_event())
                unknown.append(op)
        if events:
            changes, slices = fold_events(session, events)
            names = company_names(session, {company_id})
            entries = announce_changes(session, changes, slices, names, freshness, view.observed_at)
            missed = record_missed(session, unknown, datetime.now(UTC))
        for connection_id in view.deleted:
            erase_raw_events(session, connection_id)
    return Applied(len(events), len(unknown), entries, missed)


async def reconcile_company(
    codat: CodatClient,
    engine: Engine,
    feed: ChangeFeed | None,
    policy: FreshnessPolicy,
    company_id: str,
    lookback: timedelta,
    company: dict[str, Any] | None = None,
    lock: AbstractAsyncContextManager[object] | None = None,
) -> tuple[CodatView, Applied]:
    """Read one company (its sync settings too) and fold what differs, holding `lock` (the importer's one writer
    on SQLite); publish what changed. Raises `CodatError` when Codat could not be read, and nothing is folded."""
    await refresh_settings(codat, engine, feed, policy, company_id, lock=lock, quiet=True)
    view = await read_company(codat, engine, company_id, lookback, company)
    async with lock or nullcontext():
        applied = await asyncio.to_thread(apply_view, engine, company_id, view, policy)
    publish(feed, applied.entries)
    return view, applied


def ledger_companies(engine: Engine, with_deleted: bool = False) -> list[str]:
    query = select(Company.id) if with_deleted else select(Company.id).where(col(Company.deleted_at).is_(None))
    with Session(engine) as session:
        return sorted(session.exec(query).all())


async def discovered_companies(client: CodatClient, engine: Engine) -> list[str]:
    """The companies Codat lists (`GET /companies`, every page) that the ledger has never heard of."""
    known = set(await asyncio.to_thread(ledger_companies, engine, True))
    listed: list[str] = []
    page = 1
    while True:
        listing = await client.list_companies(page)
        listed.extend(c["id"] for c in listing.results if c["id"] not in known)
        if not listing.has_next:
            return list(dict.fromkeys(listed))
        page += 1


async def reconcile(
    settings: Settings,
    engine: Engine,
    feed: ChangeFeed | None,
    company_ids: list[str] | None = None,
    client: CodatClient | None = None,
) -> list[CompanyReport]:
    """Reconcile the companies named (default: every company the ledger knows)."""
    lookback = timedelta(hours=settings.reconcile_lookback_hours)
    policy = FreshnessPolicy.from_settings(settings)
    reports = []
    async with codat_client(settings, client) as codat:
        await refresh_settings(codat, engine, feed, policy, quiet=True)
        targets = list(company_ids or [])
        if not targets:
            targets = await asyncio.to_thread(ledger_companies, engine)
            if settings.reconcile_discover:
                try:
                    targets += await discovered_companies(codat, engine)
                except CodatError as exc:
                    log.warning("msg=discovery_failed error=%s detail=%r", exc.code.value, exc.detail)
        for company_id in targets:
            report = CompanyReport(company_id)
            reports.append(report)
            try:
                view, applied = await reconcile_company(codat, engine, feed, policy, company_id, lookback)
            except CodatError as exc:
                report.error = f"{exc.code.value}: {exc.detail}"
                log.warning(report.line())
                if exc.code in GIVE_UP:
                    break
                continue
            report.connections, report.operations = len(view.connections), len(view.operations)
            report.folded, report.changes, report.missed = applied.folded, len(applied.entries), applied.missed
            log.info(report.line())
    return reports


def publish(feed: ChangeFeed | None, entries: list[FeedEntry]) -> None:
    if feed is None or not entries:
        return
    try:
        feed.publish(entries)
    except Exception as exc:  # the ledger is committed; dashboards catch up from the API
        log.warning("msg=change_feed_unavailable error=%s", type(exc).__name__)


def run_periodic(runtime: WorkerRuntime) -> str:
    """One periodic run over every company of the ledger (in the periodic runner's thread)."""
    reports = asyncio.run(reconcile(runtime.settings, runtime.engine, runtime.feed))
    failed = sum(1 for report in reports if report.error)
    changes = sum(report.changes for report in reports)
    return f"companies={len(reports)} failed={failed} changes={changes}"


RECONCILE_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "reconcile", lambda runtime: runtime.settings.reconcile_every_seconds, run_periodic, at_start=True
)
"""Every `SYNCTRACK_RECONCILE_EVERY` (unset: 6 h with a Codat API key, else off), and at start: what was lost
while webhooks were refused is repaired when the fixed deployment comes up."""
