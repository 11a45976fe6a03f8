"""After a platform incident closes: one refresh of each connection × data type it left failed.

The check that closes an incident marks its refreshes `pending` when `SYNCTRACK_INCIDENT_AUTO_REFRESH` is on
(`workers.ledger.platform_incidents`). Every `SYNCTRACK_INCIDENT_CHECK_SECONDS` one worker takes each such incident
(marking it `done` first, so no two workers refresh it) and refreshes every connection × data type with a failure
counted in the incident — from the window that opened it until it closed — that has not succeeded since its
latest such failure, on connections still Linked (or of unknown status) and not deleted. Each refresh goes the way
of a user's (`workers.codat.system_refresh`), audited with actor ``system:incident``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from workers.codat.client import CodatClient
from workers.codat.errors import CodatError
from workers.codat.system_refresh import GIVE_UP, refresh_as
from workers.ledger.platform_incidents import NOT_COUNTED
from workers.ledger.tables import Connection, DataTypeState, PlatformIncident, Sync
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.incidents")

INCIDENT_ACTOR = "system:incident"
"""The audit log's actor of every refresh that follows an incident."""


@dataclass(frozen=True, slots=True)
class Target:
    company_id: str
    connection_id: str
    data_type: str


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
    return sorted(targets, key=lambda t: (t.company_id, t.connection_id, t.data_type))


def _targets(session: Session, incident: PlatformIncident) -> set[Target]:
    failed = (
        select(Sync.company_id, Sync.connection_id, Sync.data_type, Sync.completed_at)
        .join(Connection, col(Connection.id) == Sync.connection_id)
        .where(
            Connection.platform_key == incident.platform_key,
            col(Connection.deleted_at).is_(None),
            (col(Connection.status) == "Linked") | col(Connection.status).is_(None),
            Sync.phase == "failed",
            Sync.status != NOT_COUNTED,
            col(Sync.completed_at) > incident.failures_since,
            col(Sync.completed_at) <= incident.closed_at,
        )
    )
    latest: dict[Target, datetime] = {}
    for company_id, connection_id, data_type, at in session.exec(failed).all():
        target = Target(company_id, connection_id, data_type)
        if at is not None and (target not in latest or at > latest[target]):
            latest[target] = at
    if not latest:
        return set()
    succeeded = select(DataTypeState.connection_id, DataTypeState.data_type, DataTypeState.last_successful_sync_at)
    succeeded = succeeded.where(col(DataTypeState.connection_id).in_(sorted({t.connection_id for t in latest})))
    last_success = {(cid, dt): at for cid, dt, at in session.exec(succeeded).all()}
    return {
        target
        for target, at in latest.items()
        if (success := last_success.get((target.connection_id, target.data_type))) is None or success < at
    }


async def refresh_after_incidents(runtime: WorkerRuntime, client: CodatClient | None = None) -> int:
    """Refresh what the closed incidents pending refreshes left failed; return how many Codat accepted."""
    targets = await asyncio.to_thread(take_pending, runtime.engine)
    if not targets:
        return 0
    owned = client is None
    codat = client or CodatClient.from_settings(runtime.settings)
    accepted = 0
    try:
        for target in targets:
            try:
                await refresh_as(
                    runtime, codat, INCIDENT_ACTOR, target.company_id, target.connection_id, target.data_type
                )
            except CodatError as exc:
                log.warning(
                    "msg=incident_refresh_failed connection=%s data_type=%s error=%s",
                    target.connection_id,
                    target.data_type,
                    exc.code.value,
                )
                if exc.code in GIVE_UP:
                    break
                continue
            accepted += 1
    finally:
        if owned:
            await codat.aclose()
    return accepted


def run_incident_refresh(runtime: WorkerRuntime) -> str:
    """One run (in the periodic runner's thread)."""
    return f"requested={asyncio.run(refresh_after_incidents(runtime))}"


INCIDENT_REFRESH_JOB = PeriodicJob("refresh_after_incidents", refresh_interval, run_incident_refresh)
