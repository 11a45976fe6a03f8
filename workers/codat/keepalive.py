"""Keep-alive: a refresh for Linked connections that have not synced for a long time, so Codat keeps their token.

Codat may deauthorize a connection after 90 days without a sync and advises refreshing at least one data type
monthly. Every `SYNCTRACK_KEEPALIVE_CHECK_SECONDS` one worker in the deployment looks for Linked connections
(not deleted) whose latest completed sync and latest link are both older than `SYNCTRACK_KEEPALIVE_AFTER`, and
that have had no accepted keep-alive request for that long either, and asks Codat to refresh
`SYNCTRACK_KEEPALIVE_DATA_TYPE` of each — one call per connection per check, through the one Codat client (its
retries, `Retry-After` and quota). Each request goes the way of a refresh a user asked for
(`workers.codat.actions`): audited with actor ``system:keepalive``, its sync started, a refusal audited as
failed and tried again at the next check. The job is off without a Codat API key or with
`SYNCTRACK_KEEPALIVE_AFTER=0`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, or_
from sqlmodel import Session, col, select

from workers.codat.client import CodatClient
from workers.codat.errors import CodatError
from workers.codat.system_refresh import GIVE_UP, refresh_as
from workers.ledger.tables import AuditRecord, Connection
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.keepalive")

KEEPALIVE_ACTOR = "system:keepalive"
"""The audit log's actor of every keep-alive request."""


@dataclass(frozen=True, slots=True)
class Due:
    connection_id: str
    company_id: str


def keepalive_interval(runtime: WorkerRuntime) -> float:
    """Seconds between checks: `SYNCTRACK_KEEPALIVE_CHECK_SECONDS`; off without an API key or keep-alive period."""
    settings = runtime.settings
    if not settings.codat_api_key or settings.keepalive_after_seconds <= 0:
        return 0
    return settings.keepalive_check_seconds


def due_connections(engine: Engine, now: datetime, after: timedelta) -> list[Due]:
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
        select(Connection.id, Connection.company_id)
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
        return [Due(connection_id, company_id) for connection_id, company_id in session.exec(query).all()]


async def keep_alive(runtime: WorkerRuntime, client: CodatClient | None = None, now: datetime | None = None) -> int:
    """Send one keep-alive refresh to every connection due; return how many Codat accepted."""
    settings = runtime.settings
    now = now or datetime.now(UTC)
    due = await asyncio.to_thread(
        due_connections, runtime.engine, now, timedelta(seconds=settings.keepalive_after_seconds)
    )
    if not due:
        return 0
    owned = client is None
    codat = client or CodatClient.from_settings(settings)
    data_type = settings.keepalive_data_type
    accepted = 0
    try:
        for target in due:
            try:
                result = await refresh_as(
                    runtime, codat, KEEPALIVE_ACTOR, target.company_id, target.connection_id, data_type
                )
            except CodatError as exc:
                log.warning(
                    "msg=keepalive_failed connection=%s company=%s error=%s",
                    target.connection_id,
                    target.company_id,
                    exc.code.value,
                )
                if exc.code in GIVE_UP:
                    break
                continue
            accepted += 1
            log.info(
                "msg=keepalive_requested connection=%s company=%s data_type=%s audit=%s",
                target.connection_id,
                target.company_id,
                data_type,
                result.record.id,
            )
    finally:
        if owned:
            await codat.aclose()
    return accepted


def run_keepalive(runtime: WorkerRuntime) -> str:
    """One periodic check (in the periodic runner's thread)."""
    return f"requested={asyncio.run(keep_alive(runtime))}"


KEEPALIVE_JOB = PeriodicJob("keep_alive", keepalive_interval, run_keepalive)
