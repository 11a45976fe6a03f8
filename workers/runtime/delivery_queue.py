"""The `deliveries` queue: delivery messages, written through `workers.runtime.redis_queues`.

Web processes (retry, replay), the dispatcher thread and the actor itself (to schedule a retry) all
enqueue here with a plain Redis client, many messages per round trip, without declaring actors.
A message is `deliver_webhooks(delivery_ids)`: up to `BATCH_SIZE` ids (`batch_size`), claimed, sent and recorded
together (`workers/outbound/deliver.py`). Messages of the older one-id form, `deliver_webhook(delivery_id)`,
may still be queued from before and are served the same way.
A delayed message waits as `actor.send_with_options(delay=...)` would leave it.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

from workers.runtime.redis_queues import DELIVERY_QUEUE as DELIVERY_QUEUE
from workers.runtime.redis_queues import Encoded, encode, push

DELIVER_ACTOR = "deliver_webhook"
"""One delivery id per message: what earlier releases queued."""
DELIVER_BATCH_ACTOR = "deliver_webhooks"
"""A list of delivery ids per message: what is queued now."""
BATCH_SIZE = 200
"""Most delivery ids per message. A message costs one claim and one record transaction, a few broker round
trips and a load of its subscriptions, whatever it holds: under a backlog, messages of 50 spent a third of
a worker's time on that (`bench/subscriptions.py`)."""
SPREAD = 8
"""A burst is split into at least this many messages (while they hold `MIN_BATCH` ids or more), so that a
few hundred deliveries are sent by several threads at once rather than one after another by one."""
MIN_BATCH = 25
"""Fewest ids per message when a burst is split."""


def batch_size(count: int) -> int:
    """Ids per message for a burst of `count`: up to `BATCH_SIZE`, but small bursts spread over `SPREAD` messages."""
    return max(MIN_BATCH, min(BATCH_SIZE, -(-count // SPREAD)))


def delivery_message(delivery_ids: list[str], delay_ms: int | None = None) -> Encoded:
    """One `deliver_webhooks(delivery_ids)` message, delayed by `delay_ms` if given."""
    return encode(DELIVERY_QUEUE, DELIVER_BATCH_ACTOR, (delivery_ids,), delay_ms)


def enqueue_deliveries(redis: Redis, namespace: str, delivery_ids: Iterable[str], delay_ms: int | None = None) -> int:
    """Queue one attempt per delivery id (after `delay_ms`, if given), `batch_size` ids per message, in one
    round trip; returns the number of ids."""
    return enqueue_delayed(redis, namespace, [(list(delivery_ids), delay_ms)])


def enqueue_delayed(redis: Redis, namespace: str, groups: Iterable[tuple[list[str], int | None]]) -> int:
    """Queue each group of ids after its own delay (ms, None for now), all in one round trip; returns the
    number of ids."""
    groups = list(groups)
    messages = [
        delivery_message(ids[start : start + size], delay_ms)
        for ids, delay_ms in groups
        for size in [batch_size(len(ids))]
        for start in range(0, len(ids), size)
    ]
    push(redis, namespace, messages)
    return sum(len(ids) for ids, _ in groups)
