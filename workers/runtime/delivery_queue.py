"""The `deliveries` queue: `deliver_webhook` messages, written exactly as dramatiq's RedisBroker would.

Web processes (retry, replay), the dispatcher thread and the actor itself (to schedule a retry) all
enqueue here with a plain Redis client, many messages per round trip, without declaring actors.
A delayed message goes to dramatiq's delay queue (`deliveries.DQ`) with its `eta`, as
`actor.send_with_options(delay=...)` would put it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import dramatiq
from redis import Redis

from workers.runtime.broker import queue_keys

DELIVERY_QUEUE = "deliveries"
DELIVER_ACTOR = "deliver_webhook"


def delivery_message(delivery_id: str, delay_ms: int | None = None) -> tuple[str, str, str]:
    """(queue name, redis message id, encoded message) for one `deliver_webhook(delivery_id)`."""
    redis_id = str(uuid.uuid4())
    queue = DELIVERY_QUEUE
    options: dict[str, Any] = {"redis_message_id": redis_id}
    if delay_ms is not None and delay_ms > 0:
        queue = f"{DELIVERY_QUEUE}.DQ"
        options["eta"] = int(time.time() * 1000) + delay_ms
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=DELIVER_ACTOR, args=(delivery_id,), kwargs={}, options=options
    )
    return queue, redis_id, message.encode().decode()


def enqueue_deliveries(redis: Redis, namespace: str, delivery_ids: Iterable[str], delay_ms: int | None = None) -> int:
    """Queue one attempt per delivery id (after `delay_ms`, if given), in one round trip."""
    pipe = redis.pipeline(transaction=False)
    count = 0
    for delivery_id in delivery_ids:
        queue, redis_id, encoded = delivery_message(delivery_id, delay_ms)
        ids_key, messages_key = queue_keys(namespace, queue)
        pipe.hset(messages_key, redis_id, encoded)
        pipe.rpush(ids_key, redis_id)
        count += 1
    if count:
        pipe.execute()
    return count
