"""The operations side of a worker: the replay actor, and the middleware dead letters and replay progress rely on.
A replay started from the admin API runs here in chunks of `CHUNK_SECONDS`, each resuming the job from its saved
cursor and sending the next if it is not finished; a restart mid-job redelivers the chunk, which resumes.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from redis import Redis

from workers.ops.deadletters import FinalAttemptNotes
from workers.ops.replay import COUNTER_TTL_SECONDS, ReplayBusy, ReplayJobNotFound, ReplayRunner, counter_keys
from workers.runtime.broker import FOLD_STORED_ACTOR
from workers.runtime.redis_queues import OPS_QUEUE, Encoded, encode

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.replay")

REPLAY_ACTOR = "replay_events"
CHUNK_SECONDS = 10.0
BUSY_RETRY_MS = 5_000


def start_message(job_id: str, rate: float, max_backlog: int) -> Encoded:
    """The message that starts a replay job on the workers (the web side pushes it with its own Redis client)."""
    return encode(OPS_QUEUE, REPLAY_ACTOR, (job_id, rate, max_backlog, uuid.uuid4().hex))


class ReplayProgress(Middleware):
    """Counts, per replay job, the replayed messages a worker finished or dead-lettered."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis, self.namespace = redis, namespace

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        job_id = message.options.get("replay_job")
        if not job_id or (exception is not None and not message.failed):
            return
        folded, dead = counter_keys(self.namespace, job_id)
        key = folded if exception is None else dead
        events = len(message.args[0]) if message.actor_name == FOLD_STORED_ACTOR and message.args else 1
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key, events)
        pipe.expire(key, COUNTER_TTL_SECONDS)
        pipe.execute()


def declare_ops(broker: RedisBroker, runtime: WorkerRuntime) -> dict[str, dramatiq.Actor]:  # type: ignore[type-arg]
    namespace = runtime.settings.redis_namespace
    broker.add_middleware(FinalAttemptNotes())
    broker.add_middleware(ReplayProgress(broker.client, namespace))

    def replay_events(job_id: str, rate: float, max_backlog: int, chain: str) -> None:
        # The chunks of one start share `chain`: each takes over the lock its predecessor held.
        runner = ReplayRunner(
            runtime.engine, broker.client, namespace, rate=rate, max_backlog=max_backlog, owner=f"chain:{chain}"
        )
        try:
            job = runner.run(job_id, budget_seconds=CHUNK_SECONDS, hold_lock=True)
        except ReplayBusy:
            # Another runner (a CLI, an earlier start) has it; look again later, stop once it is finished.
            actor.send_with_options(args=(job_id, rate, max_backlog, chain), delay=BUSY_RETRY_MS)
            return
        except ReplayJobNotFound:
            log.warning("job=%s result=not_found", job_id)
            return
        log.info("job=%s status=%s done=%d total=%d", job.id, job.status, job.done, job.total)
        if job.status == "running":
            actor.send(job_id, rate, max_backlog, chain)

    actor = dramatiq.Actor(
        replay_events,
        broker=broker,
        actor_name=REPLAY_ACTOR,
        queue_name=OPS_QUEUE,
        priority=10,
        options={"max_retries": 5, "min_backoff": 1_000, "max_backoff": 60_000, "time_limit": 120_000},
    )
    return {REPLAY_ACTOR: actor}
