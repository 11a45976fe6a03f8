"""dramatiq actors. An actor only unpacks its message and calls the function that does the work."""

from __future__ import annotations

from functools import partial

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from workers.ingest.batcher import FoldBatcher
from workers.ingest.handle import FoldRequest, handle_webhooks
from workers.ledger.context import WorkerRuntime
from workers.runtime.broker import FOLD_ACTOR, FOLD_STORED_ACTOR, WEBHOOK_QUEUE


def declare_actors(broker: RedisBroker, runtime: WorkerRuntime) -> dict[str, dramatiq.Actor]:  # type: ignore[type-arg]
    settings = runtime.settings
    batcher = FoldBatcher(partial(handle_webhooks, runtime.engine, runtime.feed, freshness=runtime.freshness))
    runtime.on_close(batcher.stop)

    def fold_webhook(message_id: str, body: str | None, received_at: str | None, replay: bool = False) -> None:
        batcher.submit(FoldRequest(message_id, body, received_at, replay))

    actor = dramatiq.Actor(
        fold_webhook,
        broker=broker,
        actor_name=FOLD_ACTOR,
        queue_name=WEBHOOK_QUEUE,
        priority=0,
        options={
            "max_retries": settings.worker_max_retries,
            "min_backoff": settings.worker_min_backoff_ms,
            "max_backoff": settings.worker_max_backoff_ms,
        },
    )

    def fold_stored(event_ids: list[str]) -> None:
        requests = [FoldRequest(i, None, None, replay=True) for i in event_ids]
        handle_webhooks(runtime.engine, runtime.feed, requests, runtime.freshness)

    stored = dramatiq.Actor(
        fold_stored,
        broker=broker,
        actor_name=FOLD_STORED_ACTOR,
        queue_name=WEBHOOK_QUEUE,
        priority=10,
        options=dict(actor.options),
    )
    return {FOLD_ACTOR: actor, FOLD_STORED_ACTOR: stored}
