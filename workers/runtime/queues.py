"""dramatiq's Redis layout, owned here alone: queue keys, delay and dead-letter queues, encoded messages.

Synctrack writes some messages itself instead of calling `actor.send()` — the receiver de-duplicates and enqueues a
whole batch in one Lua call, replays and deliveries push many messages per round trip from processes that declare no
actors — so it must lay them out exactly as dramatiq's `RedisBroker` would. Every other module asks this one for the
keys and the bytes. The layout, per queue ``q`` under the namespace ``ns``:

* ``{ns}:{q}`` — list of Redis message ids waiting; ``{ns}:{q}.msgs`` — hash id -> encoded message;
* ``{ns}:{q}.DQ`` / ``{ns}:{q}.DQ.msgs`` — the delay queue (messages with an ``eta``, in ms since the epoch);
* ``{ns}:{q}.XQ`` (sorted set, score = death time in ms) / ``{ns}:{q}.XQ.msgs`` — dead letters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from redis import Redis

WEBHOOK_QUEUE = "webhooks"
OPS_QUEUE = "ops"
DELIVERY_QUEUE = "deliveries"


def queue_keys(namespace: str, queue: str = WEBHOOK_QUEUE) -> tuple[str, str]:
    """(list of message ids, hash of id -> message) of a queue."""
    return f"{namespace}:{queue}", f"{namespace}:{queue}.msgs"


def delayed_queue(queue: str) -> str:
    """The name of a queue's delay queue, where a message with an ``eta`` waits."""
    return f"{queue}.DQ"


def dead_letter_keys(namespace: str, queue: str = WEBHOOK_QUEUE) -> tuple[str, str]:
    """(sorted set of dead message ids, hash of id -> message) of a queue."""
    return f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs"


@dataclass(frozen=True, slots=True)
class Encoded:
    """One message as dramatiq stores it: the queue it goes on, its Redis message id, its bytes."""

    queue: str
    redis_id: str
    data: str


def encode(
    queue: str, actor: str, args: Sequence[Any], delay_ms: int | None = None, options: Mapping[str, Any] | None = None
) -> Encoded:
    """A message for `actor(*args)` on `queue`, exactly as `RedisBroker.enqueue` would write it.

    With `delay_ms`, it goes on the queue's delay queue with an ``eta``, as `send_with_options(delay=…)` does.
    """
    redis_id = str(uuid.uuid4())
    options = {**(options or {}), "redis_message_id": redis_id}
    if delay_ms is not None and delay_ms > 0:
        queue = delayed_queue(queue)
        options["eta"] = int(time.time() * 1000) + delay_ms
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=tuple(args), kwargs={}, options=options
    )
    return Encoded(queue, redis_id, message.encode().decode())


ITEMS_PLACEHOLDER = "\x00items\x00"


def encode_frame(queue: str, actor: str) -> tuple[str, str, str]:
    """(Redis message id, prefix, suffix) of a message whose one argument is a JSON list spliced in later.

    ``prefix + "[" + ",".join(items) + "]" + suffix`` is a valid message for `actor([item, …])`. The receiver's Lua
    script uses this to build one message out of whichever events of a batch turned out to be new, without
    decoding JSON in Redis.
    """
    encoded = encode(queue, actor, (ITEMS_PLACEHOLDER,))
    marker = '"\\u0000items\\u0000"'
    prefix, found, suffix = encoded.data.partition(marker)
    if not found:  # pragma: no cover - guards a change in dramatiq's JSON encoding
        raise RuntimeError("dramatiq's message encoding changed: cannot splice message arguments")
    return encoded.redis_id, prefix, suffix


def push(redis: Redis, namespace: str, messages: Iterable[Encoded]) -> int:
    """Write `messages` onto their queues in one round trip; return how many."""
    pipe = redis.pipeline(transaction=False)
    count = 0
    for message in messages:
        ids_key, messages_key = queue_keys(namespace, message.queue)
        pipe.hset(messages_key, message.redis_id, message.data)
        pipe.rpush(ids_key, message.redis_id)
        count += 1
    if count:
        pipe.execute()
    return count


def queued_messages(redis: Redis, namespace: str, queue: str) -> list[dramatiq.Message[Any]]:
    """The messages waiting on `queue`, oldest first (for inspection and tests)."""
    ids_key, messages_key = queue_keys(namespace, queue)
    ids = redis.lrange(ids_key, 0, -1)
    if not ids:
        return []
    raws = redis.hmget(messages_key, ids)
    return [dramatiq.Message.decode(raw if isinstance(raw, bytes) else raw.encode()) for raw in raws if raw]


def unacknowledged(redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE) -> list[dramatiq.Message[Any]]:
    """The messages of `queue` that workers have fetched and not yet acknowledged (dramatiq's per-worker ack sets
    ``{ns}:__acks__.{worker}.{queue}``): what a worker killed now would leave for the broker to requeue."""
    ids = [member for key in redis.scan_iter(f"{namespace}:__acks__.*.{queue}") for member in redis.smembers(key)]
    if not ids:
        return []
    raws = redis.hmget(queue_keys(namespace, queue)[1], ids)
    return [dramatiq.Message.decode(raw if isinstance(raw, bytes) else raw.encode()) for raw in raws if raw]
