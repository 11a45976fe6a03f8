"""The `deliver_webhook` actor (queue `deliveries`), bound to an explicit broker like `workers/ingest/actors.py`.

It only unpacks its message; `workers/outbound/deliver.py` does the work. HTTP failures are not exceptions:
the attempt records them and queues its own retry (backoff over the retry window). An exception
(database or Redis down) goes to dramatiq's own retries.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from workers.ledger.context import WorkerRuntime
from workers.outbound.deliver import Deliverer
from workers.runtime.broker import sync_redis
from workers.runtime.delivery_queue import DELIVER_ACTOR, DELIVERY_QUEUE

DELIVERY_PRIORITY = 10
"""Below `fold_webhook` (0): a worker busy with both folds webhooks first."""


def declare_delivery_actor(broker: RedisBroker, runtime: WorkerRuntime) -> dramatiq.Actor:  # type: ignore[type-arg]
    settings = runtime.settings
    deliverer = Deliverer(settings, runtime.engine, sync_redis(settings))

    def deliver_webhook(delivery_id: str) -> None:
        deliverer.run(delivery_id)

    return dramatiq.Actor(
        deliver_webhook,
        broker=broker,
        actor_name=DELIVER_ACTOR,
        queue_name=DELIVERY_QUEUE,
        priority=DELIVERY_PRIORITY,
        options={
            "max_retries": settings.worker_max_retries,
            "min_backoff": settings.worker_min_backoff_ms,
            "max_backoff": settings.worker_max_backoff_ms,
        },
    )
