"""dramatiq actors of the webhook lanes; an actor only unpacks its message and calls the function that does the work.

An event of a `fold_webhooks` or `fold_backfill` message that fails alone is split out into a `fold_webhook`
message of its own before the message is acknowledged, so it retries and dead-letters alone. Each lane has its own
folding thread, so a backfill batch being folded never holds up a live one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from workers.ingest.batcher import FoldBatcher
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.ledger.worker_runtime import WorkerRuntime
from workers.runtime.broker import FOLD_ACTOR, FOLD_BACKFILL_ACTOR, FOLD_BATCH_ACTOR, FOLD_STORED_ACTOR
from workers.runtime.metrics import receipt_seconds, record_latency
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE

log = logging.getLogger("synctrack.worker")


def declare_actors(
    broker: RedisBroker, runtime: WorkerRuntime, companies_created: Callable[[list[str]], None] | None = None
) -> None:
    """Declare the webhook lanes' actors; `companies_created` is told of each folded `company.created` (after
    commit)."""
    settings = runtime.settings
    fold = partial(
        handle_webhooks,
        runtime.engine,
        runtime.feed,
        freshness=runtime.freshness,
        companies_created=companies_created,
        durations=runtime.durations,
        incidents=runtime.incidents,
    )
    live, backfill = FoldBatcher(fold), FoldBatcher(fold)
    runtime.on_close(live.stop)
    runtime.on_close(backfill.stop)

    def declare(fn: Callable[..., None], name: str, queue: str) -> dramatiq.Actor:  # type: ignore[type-arg]
        options = {
            "max_retries": settings.worker_max_retries,
            "min_backoff": settings.worker_min_backoff_ms,
            "max_backoff": settings.worker_max_backoff_ms,
        }
        priority = 10 if queue == BACKFILL_QUEUE else 0
        return dramatiq.Actor(fn, broker=broker, actor_name=name, queue_name=queue, priority=priority, options=options)

    def fold_webhook(message_id: str, body: str | None, received_at: str | None, replay: bool = False) -> None:
        taken([] if replay else [received_at])
        live.submit(FoldRequest(message_id, body, received_at, replay))

    single = declare(fold_webhook, FOLD_ACTOR, WEBHOOK_QUEUE)

    def fold_items(lane: FoldBatcher, items: Sequence[Sequence[str]]) -> None:
        taken([item[2] for item in items])
        requests = [FoldRequest(str(item[0]), item[1], item[2]) for item in items]
        results = lane.submit_many(requests)
        failed = [(r, e) for r, e in zip(requests, results, strict=True) if isinstance(e, Exception)]
        if failed and len(failed) == len(requests):
            raise failed[0][1]  # nothing of this message was folded: dramatiq retries all of it
        for request, error in failed:
            log.warning("event=%s result=split_out error=%r", request.message_id, str(error)[:300])
            single.send(request.message_id, request.body, request.received_at)

    def fold_webhooks(items: Sequence[Sequence[str]]) -> None:
        fold_items(live, items)

    def fold_backfill(items: Sequence[Sequence[str]]) -> None:
        fold_items(backfill, items)

    def fold_stored(event_ids: list[str]) -> None:
        fold([FoldRequest(i, None, None, replay=True) for i in event_ids])

    declare(fold_webhooks, FOLD_BATCH_ACTOR, WEBHOOK_QUEUE)
    declare(fold_backfill, FOLD_BACKFILL_ACTOR, BACKFILL_QUEUE)
    declare(fold_stored, FOLD_STORED_ACTOR, BACKFILL_QUEUE)


def taken(received_at: Sequence[str | None]) -> None:
    """Observe the `queued` stage of the events a worker just took (those the receiver stamped)."""
    record_latency("queued", [at for text in received_at if (at := receipt_seconds(text)) is not None])
