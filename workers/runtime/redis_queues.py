"""dramatiq's queues in Redis, owned here alone: the broker, its key layout, message encoding and dead letters.

Synctrack writes some messages itself (receiver batches, replays, deliveries, redrives), laid out exactly as
dramatiq's `RedisBroker` lays them out; no other module names a dramatiq key. Besides dramatiq's keys, each queue
has a doorbell (``{ns}:{q}.bell``) that every enqueue rings and an idle consumer blocks on. The atomic writes are
one Lua script beside this file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dramatiq
import redis.asyncio
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed, DecodeError
from redis import Redis
from redis.client import Pipeline

WEBHOOK_QUEUE = "webhooks"
OPS_QUEUE = "ops"
DELIVERY_QUEUE = "deliveries"
BACKFILL_QUEUE = "backfill"
QUEUES = (WEBHOOK_QUEUE, BACKFILL_QUEUE, OPS_QUEUE, DELIVERY_QUEUE)
BACKFILL_PREFETCH = 2
"""Most backfill messages a worker process holds at once, so a backlog never stands in front of live work."""
BACKFILL_YIELD_SECONDS = 0.05
"""Longest a backfill fetch waits for the live consumer to be quiet: under unending live traffic a backlog moves."""
MAINTENANCE_CHANCE = 20_000
"""Broker calls, per million, that also run dramatiq's maintenance (requeueing a dead worker's in-hand messages)."""
MAINTENANCE_SECONDS = 1.0
"""Each consumer also runs maintenance this often, so a dead worker's messages return about a second after it dies."""
WAKE_MS = 1_000
"""Longest an idle consumer waits on its doorbell: delayed messages, maintenance and heartbeats ride on its looks."""
BELL_RINGS = 16
"""Most rings a doorbell keeps (a ring wakes one consumer; a ring nobody waited for costs one empty look)."""

SCRIPT = Path(__file__).with_name("redis_queues.lua").read_text()


def _keys(namespace: str, queue: str) -> tuple[str, str]:
    """(list of waiting ids, hash of id -> message, waiting or in hand until acknowledged) of a queue."""
    return f"{namespace}:{queue}", f"{namespace}:{queue}.msgs"


def _delayed(queue: str) -> str:
    return f"{queue}.DQ"


def _dead_keys(namespace: str, queue: str) -> tuple[str, str]:
    """(sorted set of dead message ids, score = death time in ms; hash of id -> message) of a queue."""
    return f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs"


def _bell(namespace: str, queue: str) -> str:
    return f"{namespace}:{queue}.bell"


def _ring(pipe: Pipeline, namespace: str, queue: str, rings: int = 1) -> None:
    """Queue, on `pipe`, `rings` rings of `queue`'s doorbell (up to `BELL_RINGS`)."""
    bell = _bell(namespace, queue)
    pipe.lpush(bell, *["1"] * min(max(rings, 1), BELL_RINGS))
    pipe.ltrim(bell, 0, BELL_RINGS - 1)


def _stored(redis: Redis, messages_key: str, ids: Sequence[Any]) -> list[dramatiq.Message[Any]]:
    """The messages `ids` of a queue's hash, decoded, in order (those gone left out)."""
    raws = redis.hmget(messages_key, ids) if ids else []
    return [dramatiq.Message.decode(raw if isinstance(raw, bytes) else raw.encode()) for raw in raws if raw]


class QueueBroker(RedisBroker):
    """dramatiq's `RedisBroker` whose idle consumers block on their queue's doorbell (at most `idle_wait_ms` and
    `WAKE_MS`) instead of polling, so they wake as soon as work arrives."""

    def __init__(self, *, client: Redis, namespace: str, heartbeat_timeout: int, idle_wait_ms: int) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            client=client,
            namespace=namespace,
            heartbeat_timeout=heartbeat_timeout,
            maintenance_chance=MAINTENANCE_CHANCE,
        )
        self.idle_wait_ms = idle_wait_ms
        self._maintained = threading.local()
        self.lanes: dict[str, DoorbellConsumer] = {}  # this process's consumer of each queue

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        wait_ms = min(timeout, self.idle_wait_ms, WAKE_MS)
        consumer = (
            BackfillConsumer(self, queue_name, BACKFILL_PREFETCH, wait_ms)
            if queue_name == BACKFILL_QUEUE
            else DoorbellConsumer(self, queue_name, prefetch, wait_ms)
        )
        self.lanes[queue_name] = consumer
        return consumer

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        self.ring(enqueued.queue_name)
        return enqueued

    def ring(self, queue: str, rings: int = 1) -> None:
        """Wake up to `rings` consumers waiting on `queue`; a failed ring is dropped (they look within `WAKE_MS`)."""
        pipe = self.client.pipeline(transaction=False)
        _ring(pipe, self.namespace, queue, rings)
        with contextlib.suppress(redis.RedisError):
            pipe.execute()

    def _should_do_maintenance(self, command: str) -> int:
        # Beside dramatiq's random share: each consumer thread fetches from one queue, so a per-thread clock runs
        # every queue's maintenance at least every `MAINTENANCE_SECONDS`.
        chosen = int(super()._should_do_maintenance(command))
        if command != "fetch":
            return chosen
        now = time.monotonic()
        if chosen or now - getattr(self._maintained, "at", 0.0) >= MAINTENANCE_SECONDS:
            self._maintained.at = now
            return 1
        return 0


class DoorbellConsumer(_RedisConsumer):
    """dramatiq's Redis consumer that, instead of polling, waits (at most `wait_ms`): with nothing to fetch, on its
    queue's doorbell; with a full prefetch in hand, for one of them to be acknowledged."""

    def __init__(self, broker: QueueBroker, queue_name: str, prefetch: int, wait_ms: int) -> None:
        super().__init__(broker, queue_name, prefetch, 0)  # type: ignore[no-untyped-call]  # its own sleep: none
        self.bell = _bell(broker.namespace, queue_name)
        self.wait_seconds = max(wait_ms, 1) / 1000
        self.room = threading.Event()
        self.quiet = threading.Event()
        """Set while this consumer holds no message and its last fetch found none."""

    def __next__(self) -> MessageProxy | None:
        self.room.clear()
        message: MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            self.quiet.clear()
            return message
        if self.outstanding_message_count == 0:
            self.quiet.set()
        if self.outstanding_message_count >= self.prefetch:
            self.room.wait(self.wait_seconds)
            return None
        try:
            self.broker.client.blpop([self.bell], timeout=self.wait_seconds)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        return None

    def ack(self, message: MessageProxy) -> None:
        try:
            super().ack(message)  # type: ignore[no-untyped-call]
        finally:
            self.room.set()

    def nack(self, message: MessageProxy) -> None:
        try:
            super().nack(message)  # type: ignore[no-untyped-call]
        finally:
            self.room.set()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        messages = list(messages)
        super().requeue(messages)  # type: ignore[no-untyped-call]
        if messages:
            self.broker.ring(self.queue_name, len(messages))


class BackfillConsumer(DoorbellConsumer):
    """The backfill queue's consumer: before each fetch it waits (up to `BACKFILL_YIELD_SECONDS`) for this
    process's live consumer to be quiet, so backfill work is taken when the live queue is empty."""

    def __next__(self) -> MessageProxy | None:
        live = self.broker.lanes.get(WEBHOOK_QUEUE)
        if live is not None and self.outstanding_message_count < self.prefetch:
            live.quiet.wait(BACKFILL_YIELD_SECONDS)
        return super().__next__()


@dataclass(frozen=True, slots=True)
class Encoded:
    """One message as dramatiq stores it: the queue it goes on, its Redis message id, its bytes."""

    queue: str
    redis_id: str
    data: str


def encode(
    queue: str, actor: str, args: Sequence[Any], delay_ms: int | None = None, options: Mapping[str, Any] | None = None
) -> Encoded:
    """A message for `actor(*args)` on `queue` as `RedisBroker.enqueue` writes it (on the delay queue, with an
    ``eta``, when `delay_ms` is given)."""
    redis_id = str(uuid.uuid4())
    options = {**(options or {}), "redis_message_id": redis_id}
    if delay_ms is not None and delay_ms > 0:
        queue = _delayed(queue)
        options["eta"] = int(time.time() * 1000) + delay_ms
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=tuple(args), kwargs={}, options=options
    )
    return Encoded(queue, redis_id, message.encode().decode())


def push(redis: Redis, namespace: str, messages: Iterable[Encoded]) -> int:
    """Write `messages` onto their queues in one round trip; return how many."""
    pipe = redis.pipeline(transaction=False)
    queues: Counter[str] = Counter()
    for message in messages:
        ids_key, messages_key = _keys(namespace, message.queue)
        pipe.hset(messages_key, message.redis_id, message.data)
        pipe.rpush(ids_key, message.redis_id)
        queues[message.queue] += 1
    for queue, count in queues.items():
        _ring(pipe, namespace, queue, count)
    if queues:
        pipe.execute()
    return queues.total()


_ITEMS_PLACEHOLDER = "\x00items\x00"


def _frame(queue: str, actor: str) -> tuple[str, str, str]:
    """(Redis message id, prefix, suffix) of a message whose one argument is a JSON list spliced in later:
    ``prefix + "[" + ",".join(items) + "]" + suffix`` is a valid message for `actor([item, …])`."""
    encoded = encode(queue, actor, (_ITEMS_PLACEHOLDER,))
    prefix, found, suffix = encoded.data.partition('"\\u0000items\\u0000"')
    if not found:  # pragma: no cover - guards a change in dramatiq's JSON encoding
        raise RuntimeError("dramatiq's message encoding changed: cannot splice message arguments")
    return encoded.redis_id, prefix, suffix


class EnqueueUnseen:
    """Enqueue, in one atomic script call, one message `actor([item, …])` carrying each item whose key was not set
    yet, and set those keys (expiring after `ttl_seconds`); a failure sets no key, so a retry is not a repeat."""

    def __init__(self, client: redis.asyncio.Redis, namespace: str, queue: str, actor: str, ttl_seconds: int) -> None:
        self.queue, self.actor, self.ttl_seconds = queue, actor, ttl_seconds
        self.queue_keys = [*_keys(namespace, queue), _bell(namespace, queue)]
        self._script = client.register_script(SCRIPT)

    async def __call__(self, items: Sequence[tuple[str, bytes]]) -> list[int]:
        """Each item is (its key, its JSON); returns 1 (enqueued) or 0 (key already set) per item, in order. Raises
        redis-py's errors if Redis did not take them."""
        redis_id, prefix, suffix = _frame(self.queue, self.actor)
        keys = [*self.queue_keys, *(key for key, _ in items)]
        args: list[str | bytes] = ["enqueue_unseen", str(BELL_RINGS), str(self.ttl_seconds), redis_id, prefix, suffix]
        args += [item for _, item in items]
        # redis-py's Script loads the script again by itself if Redis restarted (NOSCRIPT).
        return [int(result) for result in await self._script(keys=keys, args=args)]


def store_options(broker: dramatiq.Broker, message: dramatiq.Message[Any]) -> None:
    """Write `message`, its options changed by a middleware, over its stored copy on a `RedisBroker`: dramatiq
    dead-letters the copy it stored, not the one in hand."""
    if isinstance(broker, RedisBroker):
        _, messages_key = _keys(broker.namespace, message.queue_name)
        broker.client.hset(messages_key, message.options["redis_message_id"], message.encode())


def queue_length(redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE) -> int:
    """How many messages wait on `queue`, not yet fetched by a worker."""
    return int(redis.llen(_keys(namespace, queue)[0]))


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue as `/v1/admin/queues` shows it (`oldest_age_seconds` is None when nothing waits)."""

    queue: str
    depth: int
    oldest_age_seconds: float | None
    delayed: int
    dead_letters: int


async def queue_states(redis: redis.asyncio.Redis, namespace: str, queues: Sequence[str] = QUEUES) -> list[QueueState]:
    """The `QueueState` of each of `queues`, read in one script call (one instant)."""
    keys = [
        key
        for queue in queues
        for key in (*_keys(namespace, queue), _keys(namespace, _delayed(queue))[0], _dead_keys(namespace, queue)[0])
    ]
    found = await redis.register_script(SCRIPT)(keys=keys, args=["peek", str(BELL_RINGS)])
    now_ms = time.time() * 1000
    states = []
    for index, queue in enumerate(queues):
        waiting, oldest, delayed, dead = (int(value) for value in found[index * 4 : index * 4 + 4])
        age = max(0.0, (now_ms - oldest) / 1000) if waiting and oldest >= 0 else None
        states.append(QueueState(queue, waiting, age, delayed, dead))
    return states


@dataclass(frozen=True, slots=True)
class Unfinished:
    """Messages of a queue still stored: waiting (`queued`), waiting or in a worker's hands (`messages`), delayed,
    dead."""

    queued: int
    messages: int
    delayed: int
    dead: int


def unfinished(redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE) -> Unfinished:
    """The `Unfinished` counts of `queue`, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    pipe.llen(_keys(namespace, queue)[0])
    pipe.hlen(_keys(namespace, queue)[1])
    pipe.hlen(_keys(namespace, _delayed(queue))[1])
    pipe.hlen(_dead_keys(namespace, queue)[1])
    return Unfinished(*(int(count) for count in pipe.execute()))


def queued_messages(
    redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE, *, delayed: bool = False
) -> list[dramatiq.Message[Any]]:
    """The messages waiting on `queue` (on its delay queue if `delayed`), oldest first (for inspection and tests)."""
    ids_key, messages_key = _keys(namespace, _delayed(queue) if delayed else queue)
    return _stored(redis, messages_key, redis.lrange(ids_key, 0, -1))


def drop_waiting(redis: Redis, namespace: str, queue: str) -> None:
    """Delete every message waiting on `queue` (for tests that run a queue's work themselves)."""
    redis.delete(*_keys(namespace, queue))


def unacknowledged(redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE) -> list[dramatiq.Message[Any]]:
    """The messages of `queue` that workers have fetched and not yet acknowledged."""
    ids = [member for key in redis.scan_iter(f"{namespace}:__acks__.*.{queue}") for member in redis.smembers(key)]
    return _stored(redis, _keys(namespace, queue)[1], ids)


def live_workers(redis: Redis, namespace: str) -> int:
    """How many dramatiq workers have registered a heartbeat (a dead one counts until maintenance drops it)."""
    return int(redis.zcard(f"{namespace}:__heartbeats__"))


class DeadLetterQueue:
    """The dead letters of one queue (dramatiq's maintenance drops them after 7 days)."""

    def __init__(self, redis: Redis, namespace: str, queue: str = WEBHOOK_QUEUE) -> None:
        self.redis, self.queue = redis, queue
        self.zset_key, self.messages_key = _dead_keys(namespace, queue)
        self.queue_keys = (*_keys(namespace, queue), _bell(namespace, queue))
        self._script = redis.register_script(SCRIPT)

    def count(self) -> int:
        return int(self.redis.zcard(self.zset_key))

    def ids(self, start: int = 0, stop: int = -1, *, newest_first: bool = False) -> list[tuple[str, float]]:
        """(Redis message id, death time in ms since the epoch) of the dead letters ranked `start`..`stop`
        (inclusive, oldest first unless `newest_first`)."""
        ranked = self.redis.zrevrange if newest_first else self.redis.zrange
        pairs = cast(list[tuple[bytes | str, float]], ranked(self.zset_key, start, stop, withscores=True))
        return [(m.decode() if isinstance(m, bytes) else str(m), float(score)) for m, score in pairs]

    def messages(self, ids: Sequence[str]) -> list[bytes | None]:
        """The encoded message of each id (None where it is gone), in order."""
        return cast(list[bytes | None], self.redis.hmget(self.messages_key, list(ids))) if ids else []

    def redrive(self, redis_id: str, drop_options: Collection[str] = ()) -> bool:
        """Move dead letter `redis_id` back onto the queue as a new message without `drop_options`, atomically; False
        if it was gone or is not a message dramatiq can read (it stays, to be purged)."""
        raw = cast(bytes | None, self.redis.hget(self.messages_key, redis_id))
        if raw is None:
            return False
        try:
            message = dramatiq.Message.decode(raw)
        except (DecodeError, TypeError, ValueError):
            return False
        new_id = str(uuid.uuid4())
        options = {k: v for k, v in message.options.items() if k not in drop_options}
        options["redis_message_id"] = new_id
        fresh = dataclasses.replace(message, queue_name=self.queue, options=options)
        keys = (self.zset_key, self.messages_key, *self.queue_keys)
        return bool(self._script(keys=keys, args=("redrive", BELL_RINGS, redis_id, new_id, fresh.encode())))

    def purge(self, ids: Sequence[str]) -> int:
        """Delete the dead letters `ids`; return how many there were."""
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(self.zset_key, *chunk)
            pipe.hdel(self.messages_key, *chunk)
            removed += int(pipe.execute()[0])
        return removed
