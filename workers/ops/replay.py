"""Replay: stored webhooks selected by `ReplayFilters` go through the worker path again, as `fold_stored` messages
on the backfill queue (a message enqueued twice is harmless), at most `rate` events per second and none while that
queue holds more than `max_backlog`. A job (`replay_jobs`) keeps a keyset cursor over ``(received_at, id)`` and has
one runner at a time (a Redis lock with an expiry), so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from sqlalchemy import Engine, func, tuple_
from sqlalchemy.sql import ColumnElement
from sqlmodel import Session, col, select

from schemas.errors import SynctrackError
from schemas.ops import ReplayFilters, ReplayJobOut
from workers.ledger.tables import ReplayJob, WebhookEvent
from workers.runtime.broker import FOLD_STORED_ACTOR
from workers.runtime.metrics import record_replay_enqueued
from workers.runtime.redis_queues import BACKFILL_QUEUE, encode, push, queue_length

LOCK_MS = 30_000
BATCH_SIZE = 500
COUNTER_TTL_SECONDS = 7 * 86400
FINISHED = ("completed", "cancelled")

ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if (not held) or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ReplayBusy(SynctrackError):
    """Raised when another runner holds the job (it is being replayed right now)."""


class ReplayJobNotFound(SynctrackError, LookupError):
    """Raised when no replay job has the given id (`job_id`)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def conditions(filters: ReplayFilters) -> list[ColumnElement[bool]]:
    """SQL conditions on `webhook_events` for a selection (body or not)."""
    where: list[ColumnElement[bool]] = []
    for name, column in (
        ("event_id", WebhookEvent.id),
        ("company_id", WebhookEvent.company_id),
        ("connection_id", WebhookEvent.connection_id),
        ("event_type", WebhookEvent.event_type),
        ("outcome", WebhookEvent.outcome),
    ):
        values = getattr(filters, name)
        if values:
            where.append(col(column).in_(values))
    times: tuple[tuple[datetime | None, Any, bool], ...] = (
        (filters.received_from, WebhookEvent.received_at, True),
        (filters.received_to, WebhookEvent.received_at, False),
        (filters.generated_from, WebhookEvent.generated_at, True),
        (filters.generated_to, WebhookEvent.generated_at, False),
    )
    for bound, column, inclusive in times:
        if bound is not None:
            where.append(col(column) >= bound if inclusive else col(column) < bound)
    return where


def count_selection(engine: Engine, filters: ReplayFilters) -> tuple[int, int]:
    """(events a replay would enqueue, selected events whose body was pruned)."""
    has_body = col(WebhookEvent.body).is_not(None)
    query = select(func.count().filter(has_body), func.count().filter(~has_body)).where(*conditions(filters))
    with Session(engine) as session:
        replayable, pruned = session.exec(query).one()
    return int(replayable or 0), int(pruned or 0)


def _in_replay_order(filters: ReplayFilters, *columns: Any) -> Any:
    """The replayable events of a selection (those with a body) in replay order: `received_at`, then id."""
    replayable = select(*columns).where(*conditions(filters), col(WebhookEvent.body).is_not(None))
    return replayable.order_by(col(WebhookEvent.received_at), col(WebhookEvent.id))


def sample_selection(engine: Engine, filters: ReplayFilters, size: int) -> list[WebhookEvent]:
    """The first `size` replayable events of a selection, in replay order."""
    with Session(engine) as session:
        return list(session.exec(_in_replay_order(filters, WebhookEvent).limit(size)).all())


def create_job(engine: Engine, filters: ReplayFilters) -> ReplayJob:
    job = ReplayJob(id=f"rpl_{uuid.uuid4().hex[:16]}", created_at=datetime.now(UTC), filters=filters.stored())
    job.status, job.total = "pending", count_selection(engine, filters)[0]
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(job)
    return job


def _job(session: Session, job_id: str) -> ReplayJob:
    job = session.get(ReplayJob, job_id)
    if job is None:
        raise ReplayJobNotFound(job_id)
    return job


def load_job(engine: Engine, job_id: str) -> ReplayJob:
    with Session(engine) as session:
        return _job(session, job_id)


REPLAY_MESSAGE_EVENTS = 100
"""Stored events per replay message: a worker folds each message's events in one transaction."""


def lock_key(namespace: str, job_id: str) -> str:
    return f"{namespace}:replay:{job_id}:lock"


def counter_keys(namespace: str, job_id: str) -> tuple[str, str]:
    """Redis counters of replayed messages a worker finished: (folded, dead-lettered)."""
    return f"{namespace}:replay:{job_id}:folded", f"{namespace}:replay:{job_id}:dead"


def job_out(job: ReplayJob, redis: Redis, namespace: str) -> ReplayJobOut:
    """A job as the API shows it; a `running` job nobody is running any more shows as `interrupted`."""
    folded, dead = (int(v or 0) for v in redis.mget(counter_keys(namespace, job.id)))
    status = job.status
    if status == "running" and not redis.exists(lock_key(namespace, job.id)):
        status = "interrupted"
    shown = {"status": status, "filters": job.filters or {}, "folded": folded, "dead_lettered": dead}
    return ReplayJobOut.model_validate(job.model_dump() | shown)


class ReplayRunner:
    """Enqueues a job's events batch by batch, pacing itself, saving its cursor after every batch."""

    def __init__(
        self,
        engine: Engine,
        redis: Redis,
        namespace: str,
        *,
        rate: float,
        max_backlog: int,
        owner: str | None = None,
    ) -> None:
        self.engine, self.redis, self.namespace = engine, redis, namespace
        self.rate, self.max_backlog = rate, max_backlog
        # Bursts of at most a tenth of a second's worth keep the pace smooth.
        self.batch_size = max(1, min(BATCH_SIZE, int(rate / 10) or 1)) if rate > 0 else BATCH_SIZE
        self.owner = owner or f"runner:{uuid.uuid4().hex}"
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)

    def run(
        self,
        job_id: str,
        *,
        budget_seconds: float | None = None,
        on_progress: Callable[[ReplayJob], None] | None = None,
        hold_lock: bool = False,
    ) -> ReplayJob:
        """Run (or resume) the job until it is done, cancelled, or `budget_seconds` have passed; returns it as saved.
        Raises `ReplayBusy` or `ReplayJobNotFound`. Anything that interrupts it (an error, Ctrl-C) saves it as
        `interrupted` with its cursor, and propagates."""
        key = lock_key(self.namespace, job_id)
        if not self._acquire(keys=[key], args=[self.owner, LOCK_MS]):
            raise ReplayBusy(job_id)
        release = True
        try:
            job = _set_status(self.engine, job_id, "running", error=None)
            started, sent = time.monotonic(), 0
            while job.status == "running":
                if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
                    release = not hold_lock
                    break
                self._wait_for_room(key, started, sent)
                batch = self._next_batch(job)
                if not batch:
                    job = _set_status(
                        self.engine, job_id, "completed", only_running=True, finished_at=datetime.now(UTC)
                    )
                    break
                self._enqueue(job_id, [event_id for event_id, _ in batch])
                sent += len(batch)
                last_id, last_at = batch[-1]
                job = self._save(job_id, len(batch), json.dumps([last_at.isoformat(), last_id]))
                if on_progress is not None:
                    on_progress(job)
            return job
        except BaseException as exc:
            self._interrupt(job_id, exc)
            raise
        finally:
            if release:
                self._release(keys=[key], args=[self.owner])

    def _wait_for_room(self, key: str, started: float, sent: int) -> None:
        """Sleep until the pace allows the next batch and the queue has room; keep the lock alive."""
        while True:
            self._acquire(keys=[key], args=[self.owner, LOCK_MS])
            delay = (started + sent / self.rate - time.monotonic()) if self.rate > 0 else 0.0
            if delay <= 0 and queue_length(self.redis, self.namespace, BACKFILL_QUEUE) <= self.max_backlog:
                return
            time.sleep(min(max(delay, 0.05), 1.0))

    def _next_batch(self, job: ReplayJob) -> list[tuple[str, datetime]]:
        filters = ReplayFilters.model_validate(job.filters or {})
        query = _in_replay_order(filters, WebhookEvent.id, WebhookEvent.received_at).limit(self.batch_size)
        if job.cursor:
            at_text, last_id = json.loads(job.cursor)
            at = datetime.fromisoformat(at_text)
            # A row-value comparison, so the (received_at, id) index serves every batch.
            query = query.where(tuple_(col(WebhookEvent.received_at), col(WebhookEvent.id)) > tuple_(at, last_id))
        with Session(self.engine) as session:
            return [(event_id, received_at) for event_id, received_at in session.exec(query).all()]

    def _enqueue(self, job_id: str, event_ids: list[str]) -> None:
        chunks = (
            event_ids[start : start + REPLAY_MESSAGE_EVENTS]
            for start in range(0, len(event_ids), REPLAY_MESSAGE_EVENTS)
        )
        # Each message is tagged with its job, for the progress counts (`workers.ops.actors.ReplayProgress`).
        push(
            self.redis,
            self.namespace,
            (encode(BACKFILL_QUEUE, FOLD_STORED_ACTOR, (ids,), options={"replay_job": job_id}) for ids in chunks),
        )
        record_replay_enqueued(len(event_ids))

    def _save(self, job_id: str, enqueued: int, cursor: str) -> ReplayJob:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            job = _job(session, job_id)
            job.done += enqueued
            job.cursor = cursor
            return job

    def _interrupt(self, job_id: str, exc: BaseException) -> None:
        reason = "interrupted by the operator" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        # The database may be what failed; the cursor saved last still holds.
        with suppress(Exception):
            _set_status(self.engine, job_id, "interrupted", only_running=True, error=reason[:1000])


def cancel_job(engine: Engine, job_id: str) -> ReplayJob:
    """Stop a job at its next batch; what it already enqueued still folds."""
    return _set_status(engine, job_id, "cancelled", finished_at=datetime.now(UTC))


def _set_status(engine: Engine, job_id: str, status: str, only_running: bool = False, **values: Any) -> ReplayJob:
    """Move the job to `status` with `values`, unless it is finished (`only_running`: unless it is not running);
    returns it as saved."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        job = _job(session, job_id)
        if (job.status == "running") if only_running else (job.status not in FINISHED):
            job.sqlmodel_update({"status": status, **values})
        return job
