"""Import jobs in the database: create, claim, record each company, show progress.

A job (`import_jobs`) and its companies (`import_companies`: `pending`, `done` or `failed` with why) are all a
runner needs to resume. One runner at a time: it claims the job and refreshes `heartbeat_at` at least every
`LEASE`; an older claim belongs to nobody (the job shows `interrupted`), and a resume retries failed companies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from schemas.api import as_utc
from schemas.errors import SynctrackError
from schemas.imports import ImportFailure, ImportJobOut
from workers.ledger.tables import ImportCompany, ImportJob

LEASE = timedelta(seconds=30)
"""A claim not refreshed for this long is free to take over."""
ERRORS_SHOWN = 100
COMPANIES: Any = ImportCompany.__table__  # type: ignore[attr-defined]
JOBS: Any = ImportJob.__table__  # type: ignore[attr-defined]


class ImportJobNotFound(SynctrackError, LookupError):
    """Raised when no import job has the given id."""


class ImportBusy(SynctrackError):
    """Raised when another runner holds the job right now."""


def _now() -> datetime:
    return datetime.now(UTC)


def create_job(engine: Engine, company_ids: list[str] | None, lookback_hours: float) -> ImportJob:
    """A new job: the companies named, or (`company_ids` None or empty) every company Codat lists."""
    named = list(dict.fromkeys(company_ids or [])) or None
    job = ImportJob(
        id=f"imp_{uuid.uuid4().hex[:16]}",
        created_at=_now(),
        company_ids=named,
        lookback_hours=lookback_hours,
        next_page=None if named else 1,
        total=len(named or []),
    )
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(job)
        for position, company_id in enumerate(named or []):
            session.add(ImportCompany(job_id=job.id, company_id=company_id, position=position))
    return job


def load_job(engine: Engine, job_id: str) -> ImportJob:
    with Session(engine, expire_on_commit=False) as session:
        job = session.get(ImportJob, job_id)
    if job is None:
        raise ImportJobNotFound(job_id)
    return job


def shown_status(job: ImportJob, now: datetime | None = None) -> str:
    """`interrupted` for a `running` job whose runner stopped refreshing its claim."""
    heartbeat = job.heartbeat_at
    if job.status == "running" and (heartbeat is None or as_utc(heartbeat) < (now or _now()) - LEASE):
        return "interrupted"
    return job.status


def job_out(engine: Engine, job: ImportJob) -> ImportJobOut:
    with Session(engine) as session:
        connections, syncs = session.exec(
            select(
                func.coalesce(func.sum(ImportCompany.connections), 0), func.coalesce(func.sum(ImportCompany.syncs), 0)
            )
            .where(ImportCompany.job_id == job.id)
            .where(ImportCompany.status == "done")
        ).one()
        failures = session.exec(
            select(ImportCompany.company_id, ImportCompany.error)
            .where(ImportCompany.job_id == job.id, ImportCompany.status == "failed")
            .order_by(col(ImportCompany.position))
            .limit(ERRORS_SHOWN)
        ).all()
    errors = [ImportFailure(company_id=c, error=e or "unknown") for c, e in failures]
    shown = {"status": shown_status(job), "connections": int(connections), "syncs": int(syncs), "errors": errors}
    return ImportJobOut.model_validate(job.model_dump() | shown)


def claim(engine: Engine, job_id: str, owner: str, *, retry_failed: bool) -> ImportJob:
    """Take the job for `owner` and mark it running; with `retry_failed` (a start or a resume, not the next chunk)
    its failed companies go back to pending. Raises `ImportJobNotFound`, or `ImportBusy` while another runner's
    claim is fresh. A job completed without failures is returned as it is."""
    now = _now()
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job = session.get(ImportJob, job_id, with_for_update=True)
        if job is None:
            raise ImportJobNotFound(job_id)
        if job.status == "completed" and (job.failed == 0 or not retry_failed):
            return job
        heartbeat = job.heartbeat_at
        if job.runner not in (None, owner) and heartbeat is not None and as_utc(heartbeat) >= now - LEASE:
            raise ImportBusy(job_id)
        if retry_failed and job.failed:
            session.execute(
                update(COMPANIES)
                .where(COMPANIES.c.job_id == job_id, COMPANIES.c.status == "failed")
                .values(status="pending", error=None)
            )
            job.failed = 0
        job.runner, job.heartbeat_at, job.status, job.error = owner, now, "running", None
        job.finished_at = None
        job.started_at = job.started_at or now
        return job


def heartbeat(engine: Engine, job_id: str, owner: str) -> None:
    """Refresh the claim, unless someone else took the job over."""
    with engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.runner == owner).values(heartbeat_at=_now()))


def release(engine: Engine, job_id: str, owner: str) -> None:
    """Give the claim up (the job stays `running` until it is finished: a later chunk resumes it)."""
    with engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id, JOBS.c.runner == owner).values(runner=None))


def add_listed(engine: Engine, job_id: str, companies: list[dict[str, Any]], next_page: int | None) -> ImportJob:
    """Record one page of Codat's company list (a page read twice adds nothing) and where to go on."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job = session.get(ImportJob, job_id, with_for_update=True)
        assert job is not None
        start = session.exec(select(func.count()).where(ImportCompany.job_id == job_id)).one()
        rows = [
            {"job_id": job_id, "company_id": company["id"], "position": start + i, "listing": company}
            for i, company in enumerate(companies)
        ]
        if rows:
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            session.execute(insert(COMPANIES).on_conflict_do_nothing(index_elements=["job_id", "company_id"]), rows)
        job.total = session.exec(select(func.count()).where(ImportCompany.job_id == job_id)).one()
        job.next_page = next_page
        job.heartbeat_at = _now()
        return job


def pending_companies(engine: Engine, job_id: str) -> list[str]:
    """The ids of the job's companies still to import, in the order they were found."""
    with Session(engine) as session:
        query = (
            select(ImportCompany.company_id)
            .where(ImportCompany.job_id == job_id, ImportCompany.status == "pending")
            .order_by(col(ImportCompany.position))
        )
        return list(session.exec(query).all())


def company_listing(engine: Engine, job_id: str, company_id: str) -> dict[str, Any] | None:
    """The company as Codat's list showed it (None for a company the job named)."""
    with Session(engine) as session:
        row = session.get(ImportCompany, (job_id, company_id))
    return row.listing if row is not None else None


@dataclass(frozen=True)
class CompanyResult:
    company_id: str
    folded: int = 0
    connections: int = 0
    syncs: int = 0
    error: str | None = None


def record_company(engine: Engine, job_id: str, result: CompanyResult) -> ImportJob:
    """Mark one company done (or failed, with why) and count it in the job, in one transaction."""
    failed = result.error is not None
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job = session.get(ImportJob, job_id, with_for_update=True)
        assert job is not None
        row = session.get(ImportCompany, (job_id, result.company_id))
        if row is None or row.status != "pending":
            return job  # recorded already (a chunk redelivered after its commit)
        row.status = "failed" if failed else "done"
        row.folded, row.connections, row.syncs = result.folded, result.connections, result.syncs
        row.error = (result.error or "")[:1000] or None
        row.attempts += 1
        job.done += 0 if failed else 1
        job.failed += 1 if failed else 0
        job.folded += result.folded
        job.heartbeat_at = _now()
        return job


def finish(engine: Engine, job_id: str, owner: str, status: str, error: str | None = None) -> ImportJob:
    """End the job: `completed` (every company tried) or `failed` (with why)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job = session.get(ImportJob, job_id, with_for_update=True)
        assert job is not None
        if job.runner in (None, owner):
            job.status, job.error, job.finished_at, job.runner = status, error, _now(), None
        return job


def list_jobs(engine: Engine, limit: int, before: tuple[datetime, str] | None) -> list[ImportJob]:
    """Jobs newest first, `limit + 1` of them (to tell whether another page follows)."""
    query = select(ImportJob)
    if before is not None:
        at, ident = before
        query = query.where(
            (col(ImportJob.created_at) < at) | ((col(ImportJob.created_at) == at) & (col(ImportJob.id) < ident))
        )
    query = query.order_by(col(ImportJob.created_at).desc(), col(ImportJob.id).desc()).limit(limit + 1)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query).all())
