"""Refreshes Synctrack asks for itself, each taken the way a user's is (one call through the one Codat client,
recorded as a refresh action with the job's actor; a refusal audited as failed and tried again at the next run).

Keep-alive: Codat may deauthorize a connection after 90 days without a sync, so every
`SYNCTRACK_KEEPALIVE_CHECK_SECONDS` each Linked connection whose latest sync, link and accepted keep-alive are all
older than `SYNCTRACK_KEEPALIVE_AFTER` (0 = off) gets a refresh of `SYNCTRACK_KEEPALIVE_DATA_TYPE`.
After a platform incident closes (with `SYNCTRACK_INCIDENT_AUTO_REFRESH`): one refresh of each connection × data
type with a failure counted in the incident and no success since, on connections still Linked (or unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Engine, func, or_, update
from sqlmodel import Session, col, select

from workers.codat.actions import request_refresh
from workers.codat.client import CodatClient, codat_client
from workers.codat.errors import GIVE_UP, CodatError
from workers.codat.reconcile import publish
from workers.ledger.platform_incidents import NOT_COUNTED
from workers.ledger.tables import AuditRecord, Connection, DataTypeState, PlatformIncident, Sync
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

KEEPALIVE_ACTOR = "system:keepalive"
INCIDENT_ACTOR = "system:incident"
"""The audit log's actors of keep-alive requests and of the refreshes that follow an incident."""


class Target(NamedTuple):
    company_id: str
    connection_id: str
    data_type: str


async def refresh_each(
    runtime: WorkerRuntime, client: CodatClient | None, actor: str, targets: Iterable[Target], job: str
) -> int:
    """Refresh each target as `actor` (a refusal audited, tried again at the next run), logged as `job`; stop at a
    failure in `GIVE_UP`. Returns how many Codat accepted."""
    log, accepted = logging.getLogger(f"synctrack.{job}"), 0
    async with codat_client(runtime.settings, client) as codat:
        for target in targets:
            try:
                result = await request_refresh(
                    runtime.engine, codat, actor=actor, freshness=runtime.freshness, **target._asdict()
                )
            except CodatError as exc:
                log.warning("msg=%s_failed %s error=%s", job, _fields(target), exc.code.value)
                if exc.code in GIVE_UP:
                    break
                continue
            publish(runtime.feed, result.entries)
            accepted += 1
            log.info("msg=%s_requested %s audit=%s", job, _fields(target), result.record.id)
    return accepted


def _fields(target: Target) -> str:
    return f"connection={target.connection_id} company={target.company_id} data_type={target.data_type}"


def keepalive_interval(runtime: WorkerRuntime) -> float:
    """Seconds between checks: `SYNCTRACK_KEEPALIVE_CHECK_SECONDS`; off without an API key or keep-alive period."""
    settings = runtime.settings
    if not settings.codat_api_key or settings.keepalive_after_seconds <= 0:
        return 0
    return settings.keepalive_check_seconds


def due_connections(engine: Engine, now: datetime, after: timedelta, data_type: str) -> list[Target]:
    """Linked connections with no completed sync, no link and no accepted keep-alive request since `now - after`."""
    cutoff = now - after
    requested = (
        select(func.count())
        .where(
            col(AuditRecord.connection_id) == Connection.id,
            col(AuditRecord.actor) == KEEPALIVE_ACTOR,
            col(AuditRecord.result) == "accepted",
            col(AuditRecord.at) >= cutoff,
        )
        .scalar_subquery()
    )
    query = (
        select(Connection.company_id, Connection.id)
        .where(
            Connection.status == "Linked",
            col(Connection.deleted_at).is_(None),
            or_(col(Connection.last_sync_at).is_(None), col(Connection.last_sync_at) < cutoff),
            func.coalesce(Connection.last_linked_at, Connection.linked_at, Connection.created_at) < cutoff,
            requested == 0,
        )
        .order_by(col(Connection.id))
    )
    with Session(engine) as session:
        return [Target(company_id, connection_id, data_type) for company_id, connection_id in session.exec(query)]


async def keep_alive(runtime: WorkerRuntime, client: CodatClient | None = None, now: datetime | None = None) -> int:
    """Send one keep-alive refresh to every connection due; return how many Codat accepted."""
    settings = runtime.settings
    after = timedelta(seconds=settings.keepalive_after_seconds)
    due = await asyncio.to_thread(
        due_connections, runtime.engine, now or datetime.now(UTC), after, settings.keepalive_data_type
    )
    return await refresh_each(runtime, client, KEEPALIVE_ACTOR, due, "keepalive") if due else 0


KEEPALIVE_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "keep_alive", keepalive_interval, lambda runtime: f"requested={asyncio.run(keep_alive(runtime))}"
)


def refresh_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_INCIDENT_CHECK_SECONDS`; off without an API key or auto-refresh."""
    settings = runtime.settings
    if not settings.codat_api_key or not settings.incident_auto_refresh:
        return 0
    return settings.incident_check_seconds


def take_pending(engine: Engine) -> list[Target]:
    """Claim every closed incident whose refreshes are pending; the targets they leave, in a stable order."""
    targets: set[Target] = set()
    with Session(engine) as session, session.begin():
        pending = session.exec(select(PlatformIncident).where(PlatformIncident.refresh_state == "pending")).all()
        for incident in pending:
            claimed = session.execute(
                update(PlatformIncident)
                .where(col(PlatformIncident.id) == incident.id, col(PlatformIncident.refresh_state) == "pending")
                .values(refresh_state="done")
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                targets |= _targets(session, incident)
    return sorted(targets)


def _targets(session: Session, incident: PlatformIncident) -> set[Target]:
    success = col(DataTypeState.last_successful_sync_at)
    failed = (
        select(Sync.company_id, Sync.connection_id, Sync.data_type)
        .join(Connection, col(Connection.id) == Sync.connection_id)
        .outerjoin(
            DataTypeState,
            (col(DataTypeState.connection_id) == Sync.connection_id) & (col(DataTypeState.data_type) == Sync.data_type),
        )
        .where(
            Connection.platform_key == incident.platform_key,
            col(Connection.deleted_at).is_(None),
            (col(Connection.status) == "Linked") | col(Connection.status).is_(None),
            Sync.phase == "failed",
            Sync.status != NOT_COUNTED,
            col(Sync.completed_at) > incident.failures_since,
            col(Sync.completed_at) <= incident.closed_at,
        )
        .group_by(col(Sync.company_id), col(Sync.connection_id), col(Sync.data_type), success)
        .having(success.is_(None) | (success < func.max(Sync.completed_at)))
    )
    return {Target(*row) for row in session.exec(failed)}


async def refresh_after_incidents(runtime: WorkerRuntime, client: CodatClient | None = None) -> int:
    """Refresh what the closed incidents pending refreshes left failed; return how many Codat accepted."""
    targets = await asyncio.to_thread(take_pending, runtime.engine)
    if not targets:
        return 0
    return await refresh_each(runtime, client, INCIDENT_ACTOR, targets, "incident_refresh")


INCIDENT_REFRESH_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "refresh_after_incidents",
    refresh_interval,
    lambda runtime: f"requested={asyncio.run(refresh_after_incidents(runtime))}",
)
