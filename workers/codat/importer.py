"""Import an existing Codat account: every company it lists, folded as reconciliation folds one.

A job (`workers.codat.import_jobs`) pages `GET /companies`, records each company, then reads and folds each one
through `workers.codat.reconcile`, `concurrency` at a time, so a second run folds nothing. A failed company is
retried by a resume; a refused API key fails the job. On the workers the `import_companies` actor runs a job in
chunks of `CHUNK_SECONDS`, each resuming it from the database, so a worker restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine

from schemas.errors import ErrorCode
from schemas.events import InvalidEnvelope
from schemas.imports import DEFAULT_CONCURRENCY
from schemas.settings import Settings
from workers.codat.client import PAGE_SIZE, CodatClient, codat_client
from workers.codat.errors import CodatError
from workers.codat.import_jobs import (
    LEASE,
    CompanyResult,
    ImportBusy,
    ImportJobNotFound,
    add_listed,
    claim,
    company_listing,
    finish,
    heartbeat,
    load_job,
    pending_companies,
    record_company,
    release,
)
from workers.codat.reconcile import reconcile_company
from workers.codat.sync_settings import refresh_settings
from workers.ledger.changes import ChangeFeed
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.tables import ImportJob
from workers.runtime.redis_queues import BACKFILL_QUEUE, Encoded, encode

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.import")


class Importer:
    """Runs (or resumes) import jobs against one Codat client."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        feed: ChangeFeed | None,
        *,
        client: CodatClient | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        owner: str | None = None,
        on_progress: Callable[[ImportJob], None] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.settings, self.engine, self.feed, self.client = settings, engine, feed, client
        self.concurrency = max(1, concurrency)
        self.owner = owner or f"runner:{uuid.uuid4().hex[:12]}"
        self.on_progress = on_progress
        self.page_size = page_size
        self.freshness = FreshnessPolicy.from_settings(settings)
        self._fold_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    async def run(self, job_id: str, *, retry_failed: bool = True, budget_seconds: float | None = None) -> ImportJob:
        """Run the job until every company was tried (`completed`), it fails, or the budget is spent (then
        it stays `running`, unclaimed, for the next chunk). Raises `ImportJobNotFound`, `ImportBusy`."""
        job = await asyncio.to_thread(claim, self.engine, job_id, self.owner, retry_failed=retry_failed)
        if job.status == "completed":
            return job
        deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        beating = asyncio.create_task(self._keep_claim(job_id))
        try:
            async with codat_client(self.settings, self.client) as codat:
                await refresh_settings(codat, self.engine, self.feed, self.freshness, lock=self._fold_lock, quiet=True)
                job = await self._discover(codat, job, deadline)
                if job.status != "running" or job.next_page is not None:
                    return job
                stopped = await self._import_all(codat, job, deadline)
            if stopped is not None:
                return await asyncio.to_thread(finish, self.engine, job_id, self.owner, "failed", stopped)
            if await asyncio.to_thread(pending_companies, self.engine, job_id):
                await asyncio.to_thread(release, self.engine, job_id, self.owner)
                return await asyncio.to_thread(load_job, self.engine, job_id)
            job = await asyncio.to_thread(finish, self.engine, job_id, self.owner, "completed")
            done = f"total={job.total} done={job.done} failed={job.failed} folded={job.folded}"
            log.info("job=%s status=%s %s", job.id, job.status, done)
            return job
        finally:
            beating.cancel()

    async def _keep_claim(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            await asyncio.to_thread(heartbeat, self.engine, job_id, self.owner)

    async def _discover(self, codat: CodatClient, job: ImportJob, deadline: float | None) -> ImportJob:
        """Page `GET /companies` from where the job stopped, recording every company found."""
        while job.next_page is not None:
            if deadline is not None and time.monotonic() >= deadline:
                await asyncio.to_thread(release, self.engine, job.id, self.owner)
                return job
            try:
                page = await codat.list_companies(job.next_page, self.page_size)
            except CodatError as exc:
                reason = f"listing Codat's companies failed: {exc.code.value}: {exc.detail}"
                log.warning("job=%s result=failed error=%r", job.id, reason)
                return await asyncio.to_thread(finish, self.engine, job.id, self.owner, "failed", reason)
            following = job.next_page + 1 if page.has_next else None
            job = await asyncio.to_thread(add_listed, self.engine, job.id, page.results, following)
            self._progress(job)
        return job

    async def _import_all(self, codat: CodatClient, job: ImportJob, deadline: float | None) -> str | None:
        """Import every pending company, `concurrency` at a time; the reason to stop the job, if any."""
        queue = list(reversed(await asyncio.to_thread(pending_companies, self.engine, job.id)))
        lookback = timedelta(hours=job.lookback_hours)
        stop: list[str] = []

        async def worker() -> None:
            while queue and not stop and (deadline is None or time.monotonic() < deadline):
                result = await self._import_company(codat, job.id, queue.pop(), lookback)
                if result.error and result.error.startswith(ErrorCode.CODAT_AUTH_FAILED.value):
                    stop.append(result.error)
                self._progress(await asyncio.to_thread(record_company, self.engine, job.id, result))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return stop[0] if stop else None

    async def _import_company(
        self, codat: CodatClient, job_id: str, company_id: str, lookback: timedelta
    ) -> CompanyResult:
        listing = await asyncio.to_thread(company_listing, self.engine, job_id, company_id)
        try:
            company = listing if listing is not None else await codat.get_company(company_id)
            view, applied = await reconcile_company(
                codat, self.engine, self.feed, self.freshness, company_id, lookback, company, self._fold_lock
            )
        except CodatError as exc:
            error = f"{exc.code.value}: {exc.detail}"
            log.warning("job=%s company=%s result=failed error=%r", job_id, company_id, error)
            return CompanyResult(company_id, error=error)
        except InvalidEnvelope as exc:
            return CompanyResult(company_id, error=f"codat_error: an answer of Codat is unreadable: {exc}")
        log.info(
            "job=%s company=%s result=ok connections=%d syncs=%d folded=%d",
            job_id,
            company_id,
            len(view.connections),
            applied.syncs,
            applied.folded,
        )
        return CompanyResult(company_id, applied.folded, len(view.connections), applied.syncs)

    def _progress(self, job: ImportJob) -> None:
        if self.on_progress is not None:
            self.on_progress(job)


IMPORT_ACTOR = "import_companies"
CHUNK_SECONDS = 20.0
BUSY_RETRY_MS = int(LEASE.total_seconds() * 1000)


def start_message(job_id: str, concurrency: int) -> Encoded:
    """The message that starts or resumes an import on the workers, for the web side to push with its own
    Redis client (`workers.runtime.redis_queues.push`)."""
    return encode(BACKFILL_QUEUE, IMPORT_ACTOR, (job_id, concurrency, uuid.uuid4().hex, True))


def declare_imports(broker: RedisBroker, runtime: WorkerRuntime) -> dict[str, dramatiq.Actor]:  # type: ignore[type-arg]
    def import_companies(job_id: str, concurrency: int, chain: str, first: bool) -> None:
        # The chunks of one start share `chain` (their claim); only the first retries failed companies.
        importer = Importer(
            runtime.settings, runtime.engine, runtime.feed, concurrency=concurrency, owner=f"chain:{chain}"
        )
        try:
            job = asyncio.run(importer.run(job_id, retry_failed=first, budget_seconds=CHUNK_SECONDS))
        except ImportBusy:
            # A CLI (or an earlier chain) runs it now; look again once its claim could have lapsed.
            actor.send_with_options(args=(job_id, concurrency, chain, first), delay=BUSY_RETRY_MS)
            return
        except ImportJobNotFound:
            log.warning("job=%s result=not_found", job_id)
            return
        log.info("job=%s status=%s done=%d failed=%d total=%d", job.id, job.status, job.done, job.failed, job.total)
        if job.status == "running":
            actor.send(job_id, concurrency, chain, False)

    actor = dramatiq.Actor(
        import_companies,
        broker=broker,
        actor_name=IMPORT_ACTOR,
        queue_name=BACKFILL_QUEUE,  # an import folds history: it must not stand in front of live webhooks
        priority=10,
        options={"max_retries": 5, "min_backoff": 1_000, "max_backoff": 60_000, "time_limit": 300_000},
    )
    return {IMPORT_ACTOR: actor}
