"""The `deliveries` queue: `deliver_webhook` messages, written exactly as dramatiq's RedisBroker would.

Web processes (retry, replay), the dispatcher thread and the actor itself (to schedule a retry) all
enqueue here with a plain Redis client, many messages per round trip, without declaring actors.
A delayed message goes to dramatiq's delay queue (`deliveries.DQ`) with its `eta`, as
`actor.send_with_options(delay=...)` would put it.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

from workers.runtime.queues import DELIVERY_QUEUE as DELIVERY_QUEUE
from workers.runtime.queues import Encoded, encode, push

DELIVER_ACTOR = "deliver_webhook"


def delivery_message(delivery_id: str, delay_ms: int | None = None) -> Encoded:
    """One `deliver_webhook(delivery_id)` message, delayed by `delay_ms` if given."""
    return encode(DELIVERY_QUEUE, DELIVER_ACTOR, (delivery_id,), delay_ms)


def enqueue_deliveries(redis: Redis, namespace: str, delivery_ids: Iterable[str], delay_ms: int | None = None) -> int:
    """Queue one attempt per delivery id (after `delay_ms`, if given), in one round trip."""
    return push(redis, namespace, (delivery_message(i, delay_ms) for i in delivery_ids))
