"""The import job on the workers: the `import_companies` actor on the `backfill` queue, in chunks of
`CHUNK_SECONDS`; each chunk resumes the job from the database and sends the next one. A worker restart mid-chunk
loses nothing: the message is redelivered once the dead worker's claim has lapsed, and resumes the job."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from workers.codat.import_jobs import LEASE, ImportBusy, ImportJobNotFound
from workers.codat.importer import Importer
from workers.runtime.redis_queues import BACKFILL_QUEUE, Encoded, encode

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.import")

IMPORT_QUEUE = BACKFILL_QUEUE
"""The backfill queue: an import folds history, which must not stand in front of live webhooks."""
IMPORT_ACTOR = "import_companies"
CHUNK_SECONDS = 20.0
BUSY_RETRY_MS = int(LEASE.total_seconds() * 1000)


def start_message(job_id: str, concurrency: int) -> Encoded:
    """The message that starts or resumes an import on the workers, for the web side to push with its own
    Redis client (`workers.runtime.redis_queues.push`)."""
    return encode(IMPORT_QUEUE, IMPORT_ACTOR, (job_id, concurrency, uuid.uuid4().hex, True))


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
        queue_name=IMPORT_QUEUE,
        priority=10,
        options={"max_retries": 5, "min_backoff": 1_000, "max_backoff": 60_000, "time_limit": 300_000},
    )
    return {IMPORT_ACTOR: actor}
