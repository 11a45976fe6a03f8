"""Targeted reconciliation: reconcile a company soon after a data type of one of its Linked connections turns overdue
(a sync Codat did not run, or a result whose webhook was lost: reading Codat tells which and folds what was lost).

Freshness transitions write `reconcile_requests`; every `SYNCTRACK_RECONCILE_OVERDUE_CHECK_SECONDS`, with an API key,
this job serves the companies asked for, at most once per `TARGETED_EVERY` each, oldest request first. The periodic
sweep (`SYNCTRACK_RECONCILE_EVERY`) is separate and does not count toward the hour."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, Table, delete, func
from sqlalchemy import select as sql_select
from sqlmodel import Session

from workers.codat.reconcile import reconcile
from workers.ledger.bulk_sql import insert_rows
from workers.ledger.tables import OverdueReconcile, ReconcileRequest
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

REQUESTS: Table = ReconcileRequest.__table__  # type: ignore[attr-defined]
LAST_RUNS: Table = OverdueReconcile.__table__  # type: ignore[attr-defined]

TARGETED_EVERY = timedelta(hours=1)
"""At most one targeted reconciliation of a company this often."""
MAX_COMPANIES = 100
"""Companies reconciled per run; the rest wait for the next run, so one run stays short."""


def claim_due(engine: Engine, now: datetime, limit: int = MAX_COMPANIES) -> list[str]:
    """The companies asked for whose last targeted reconciliation is `TARGETED_EVERY` old or more (or never ran),
    oldest request first, at most `limit`: their requests are removed and `now` recorded as their last run."""
    with Session(engine) as session, session.begin():
        recent = sql_select(LAST_RUNS.c.company_id).where(LAST_RUNS.c.reconciled_at > now - TARGETED_EVERY)
        query = (
            sql_select(REQUESTS.c.company_id, func.max(REQUESTS.c.id))
            .where(REQUESTS.c.requested_at <= now, REQUESTS.c.company_id.not_in(recent))
            .group_by(REQUESTS.c.company_id)
            .order_by(func.min(REQUESTS.c.requested_at), REQUESTS.c.company_id)
            .limit(limit)
        )
        due = session.execute(query).all()
        for company_id, last_id in due:
            session.execute(delete(REQUESTS).where(REQUESTS.c.company_id == company_id, REQUESTS.c.id <= last_id))
        runs = [{"company_id": company_id, "reconciled_at": now} for company_id, _ in due]
        insert_rows(session, LAST_RUNS, runs, conflict=["company_id"])
    return [company_id for company_id, _ in due]


def overdue_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_RECONCILE_OVERDUE_CHECK_SECONDS` with a Codat API key, else off."""
    settings = runtime.settings
    return settings.reconcile_overdue_check_seconds if settings.codat_api_key else 0.0


def run_targeted(runtime: WorkerRuntime, now: datetime | None = None) -> str:
    """Reconcile the companies due (in the periodic runner's thread)."""
    due = claim_due(runtime.engine, now or datetime.now(UTC))
    if not due:
        return "companies=0"
    reports = asyncio.run(reconcile(runtime.settings, runtime.engine, runtime.feed, due))
    failed = sum(1 for report in reports if report.error)
    missed = sum(report.missed for report in reports)
    return f"companies={len(reports)} failed={failed} missed={missed}"


OVERDUE_RECONCILE_JOB = PeriodicJob("reconcile_overdue", overdue_interval, run_targeted)
