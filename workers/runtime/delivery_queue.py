"""The `deliveries` queue: `deliver_webhooks(delivery_ids)` messages, many per round trip, from any process.

The ids of one message are claimed, sent and recorded together (`workers/outbound/deliver.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis

from workers.runtime.redis_queues import DELIVERY_QUEUE as DELIVERY_QUEUE
from workers.runtime.redis_queues import encode, push

DELIVER_ACTOR = "deliver_webhook"
"""One delivery id per message: what earlier releases queued."""
DELIVER_BATCH_ACTOR = "deliver_webhooks"
"""A list of delivery ids per message: what is queued now."""
BATCH_SIZE = 200
"""Most delivery ids per message (a message costs the same few transactions and round trips whatever it holds)."""
SPREAD = 8
"""A burst is split into at least this many messages of `MIN_BATCH` ids or more, sent by several threads at once."""
MIN_BATCH = 25


def batch_size(count: int) -> int:
    """Ids per message for a burst of `count`: up to `BATCH_SIZE`, but small bursts spread over `SPREAD` messages."""
    return max(MIN_BATCH, min(BATCH_SIZE, -(-count // SPREAD)))


def enqueue_deliveries(redis: Redis, namespace: str, delivery_ids: Iterable[str]) -> int:
    """Queue one attempt per delivery id now, in one round trip; return how many."""
    return enqueue_delayed(redis, namespace, [(list(delivery_ids), None)])


def enqueue_delayed(redis: Redis, namespace: str, groups: Iterable[tuple[list[str], int | None]]) -> int:
    """Queue each group of ids after its own delay (ms, None for now) in one round trip; return how many."""
    groups = list(groups)
    messages = [
        encode(DELIVERY_QUEUE, DELIVER_BATCH_ACTOR, (ids[start : start + size],), delay_ms)
        for ids, delay_ms in groups
        for size in [batch_size(len(ids))]
        for start in range(0, len(ids), size)
    ]
    push(redis, namespace, messages)
    return sum(len(ids) for ids, _ in groups)
