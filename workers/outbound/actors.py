"""The delivery actors (queue `deliveries`): `deliver_webhooks(delivery_ids)` is what is queued, `deliver_webhook
(delivery_id)` serves messages of the one-id form queued before; `Deliverer` does the work. HTTP failures are
recorded and retried by the attempts themselves; an exception (database or Redis down) goes to dramatiq's retries,
and a repeated batch is harmless (what was done is no longer due).
"""

from __future__ import annotations

from functools import partial

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
    declare = partial(
        dramatiq.Actor,
        broker=broker,
        queue_name=DELIVERY_QUEUE,
        priority=DELIVERY_PRIORITY,
        options={
            "max_retries": settings.worker_max_retries,
            "min_backoff": settings.worker_min_backoff_ms,
            "max_backoff": settings.worker_max_backoff_ms,
        },
    )
    declare(deliverer.run, actor_name=DELIVER_ACTOR)
    return declare(deliverer.run_batch, actor_name=DELIVER_BATCH_ACTOR)
