"""The delivery actors (queue `deliveries`), bound to an explicit broker like `workers/ingest/actors.py`.

`deliver_webhooks(delivery_ids)` is what is queued (`workers/runtime/delivery_queue.py`); `deliver_webhook
(delivery_id)` serves messages of the one-id form queued before. They only unpack their message;
`workers/outbound/deliver.py` does the work. HTTP failures are not exceptions: the attempts record them and
queue their own retries (backoff over the retry window). An exception (database or Redis down) goes to
dramatiq's own retries; a repeated batch is harmless (what was done is no longer due).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from workers.ledger.worker_runtime import WorkerRuntime
from workers.outbound.deliver import Deliverer
from workers.runtime.broker import sync_redis
from workers.runtime.delivery_queue import DELIVER_ACTOR, DELIVER_BATCH_ACTOR, DELIVERY_QUEUE

DELIVERY_PRIORITY = 10
"""Below `fold_webhook` (0): a worker busy with both folds webhooks first."""


def declare_delivery_actor(broker: RedisBroker, runtime: WorkerRuntime) -> dramatiq.Actor:  # type: ignore[type-arg]
    """Declare both delivery actors on `broker`; returns the batch one."""
    settings = runtime.settings
    deliverer = Deliverer(settings, runtime.engine, sync_redis(settings))
    runtime.on_close(deliverer.close)
    options = {
        "max_retries": settings.worker_max_retries,
        "min_backoff": settings.worker_min_backoff_ms,
        "max_backoff": settings.worker_max_backoff_ms,
    }

    def deliver_webhook(delivery_id: str) -> None:
        deliverer.run(delivery_id)

    def deliver_webhooks(delivery_ids: list[str]) -> None:
        deliverer.run_batch(delivery_ids)

    dramatiq.Actor(
        deliver_webhook,
        broker=broker,
        actor_name=DELIVER_ACTOR,
        queue_name=DELIVERY_QUEUE,
        priority=DELIVERY_PRIORITY,
        options=options,
    )
    return dramatiq.Actor(
        deliver_webhooks,
        broker=broker,
        actor_name=DELIVER_BATCH_ACTOR,
        queue_name=DELIVERY_QUEUE,
        priority=DELIVERY_PRIORITY,
        options=options,
    )
