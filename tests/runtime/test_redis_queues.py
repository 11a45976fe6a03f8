"""The broker's consumers wait on Redis instead of polling: each way work reaches a queue wakes a waiting consumer
at once, and a dead worker's messages still go back on a quiet queue promptly. On the real Redis and on the
in-process one (`synctrack dev`)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import fakeredis
import pytest
import redis
import redis.asyncio

from tests.support.services import REDIS_URL, redis_unavailable
from workers.runtime.redis_queues import (
    BACKFILL_PREFETCH,
    BACKFILL_QUEUE,
    WAKE_MS,
    DeadLetterQueue,
    EnqueueUnseen,
    QueueBroker,
    encode,
    push,
)

QUEUE = "webhooks"
ACTOR = "fold_webhook"


class Redises:
    """A blocking and an asyncio client of one Redis, and a namespace of its own."""

    def __init__(self, sync: redis.Redis, make_async: Callable[[], redis.asyncio.Redis]) -> None:
        self.sync, self.make_async = sync, make_async
        self.namespace = f"synctrack-test-{uuid.uuid4().hex[:10]}"

    def broker(self, heartbeat_timeout: int = 60_000) -> QueueBroker:
        broker = QueueBroker(
            client=self.sync, namespace=self.namespace, heartbeat_timeout=heartbeat_timeout, idle_wait_ms=10_000
        )
        broker.declare_queue(QUEUE)
        return broker


@pytest.fixture(params=["in-process", "real"])
def redises(request: pytest.FixtureRequest) -> Iterator[Redises]:
    if request.param == "in-process":
        server = fakeredis.FakeServer()
        yield Redises(fakeredis.FakeRedis(server=server), lambda: fakeredis.FakeAsyncRedis(server=server))
        return
    reason = redis_unavailable()
    if reason:
        pytest.skip(reason)
    found = Redises(redis.Redis.from_url(REDIS_URL), lambda: redis.asyncio.Redis.from_url(REDIS_URL))
    yield found
    keys = list(found.sync.scan_iter(f"{found.namespace}:*"))
    if keys:
        found.sync.delete(*keys)


def first_message(consumer: dramatiq.Consumer, timeout: float) -> dict[str, Any]:
    """Iterate `consumer` in a thread until it yields a message; the message and when it came."""
    got: dict[str, Any] = {}

    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                got.update(message=message, at=time.monotonic())
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got["thread"] = thread
    return got


def a_dead_letter(redises: Redises) -> str:
    """A message that failed for good (fetched and rejected), now a dead letter; its Redis id."""
    consumer = redises.broker().consume(QUEUE, prefetch=1, timeout=100)
    push(redises.sync, redises.namespace, [encode(QUEUE, ACTOR, ("dead",))])
    message = next(consumer)
    assert message is not None
    consumer.nack(message)
    ((redis_id, _),) = DeadLetterQueue(redises.sync, redises.namespace).ids()
    return redis_id


def receiver_batch(redises: Redises) -> list[int]:
    enqueue = EnqueueUnseen(redises.make_async(), redises.namespace, QUEUE, ACTOR, 60)
    return asyncio.run(enqueue([(f"{redises.namespace}:seen:1", b'"received"')]))


ENQUEUES: dict[str, Callable[[Redises], object]] = {
    "pushed": lambda r: push(r.sync, r.namespace, [encode(QUEUE, ACTOR, ("pushed",))]),
    "sent by an actor": lambda r: r.broker().enqueue(dramatiq.Message(QUEUE, ACTOR, ("sent",), {}, {})),
    "enqueued by the receiver": receiver_batch,
}


@pytest.mark.parametrize("how", [*ENQUEUES, "redriven"])
def test_a_waiting_consumer_wakes_as_soon_as_work_reaches_its_queue(redises: Redises, how: str) -> None:
    dead = a_dead_letter(redises) if how == "redriven" else None
    consumer = redises.broker().consume(QUEUE, prefetch=10, timeout=10_000)
    got = first_message(consumer, timeout=5)
    time.sleep(0.2)  # the consumer found nothing and waits now
    enqueued = time.monotonic()
    if dead is not None:
        assert DeadLetterQueue(redises.sync, redises.namespace).redrive(dead)
    else:
        ENQUEUES[how](redises)
    got["thread"].join(5)
    assert "message" in got, "no message came"
    # A consumer that only looked again after its wait would take most of `WAKE_MS` more.
    assert got["at"] - enqueued < WAKE_MS / 1000 / 2


def test_a_dead_workers_message_goes_back_on_a_quiet_queue_soon_after_its_heartbeat_lapses(
    redises: Redises,
) -> None:
    dead_worker = redises.broker(heartbeat_timeout=300).consume(QUEUE, prefetch=1, timeout=100)
    push(redises.sync, redises.namespace, [encode(QUEUE, ACTOR, ("in hand",))])
    assert next(dead_worker) is not None  # fetched, never acknowledged: the worker dies holding it

    survivor = redises.broker(heartbeat_timeout=300).consume(QUEUE, prefetch=1, timeout=10_000)
    got = first_message(survivor, timeout=6)
    got["thread"].join(6)
    assert "message" in got and got["message"].args == ("in hand",)


def test_a_dead_letter_that_is_not_a_message_stays_where_it_is_when_redriven(redises: Redises) -> None:
    dead = a_dead_letter(redises)
    letters = DeadLetterQueue(redises.sync, redises.namespace)
    redises.sync.hset(letters.messages_key, dead, b"not a message")

    assert not letters.redrive(dead)
    assert [redis_id for redis_id, _ in letters.ids()] == [dead]
    assert letters.messages([dead]) == [b"not a message"]


def test_a_waiting_backfill_consumer_wakes_as_soon_as_work_reaches_the_backfill_queue(redises: Redises) -> None:
    broker = redises.broker()
    broker.declare_queue(BACKFILL_QUEUE)
    broker.consume(QUEUE, prefetch=10, timeout=10_000)
    backfill = broker.consume(BACKFILL_QUEUE, prefetch=10, timeout=10_000)
    got = first_message(backfill, timeout=5)
    time.sleep(0.2)  # the consumer found nothing and waits now
    enqueued = time.monotonic()
    push(redises.sync, redises.namespace, [encode(BACKFILL_QUEUE, ACTOR, ("old",))])
    got["thread"].join(5)
    assert "message" in got and got["message"].args == ("old",)
    assert got["at"] - enqueued < WAKE_MS / 1000 / 2


def test_a_backfill_consumer_holds_a_bounded_share_of_messages_whatever_its_prefetch(redises: Redises) -> None:
    broker = redises.broker()
    broker.declare_queue(BACKFILL_QUEUE)
    backfill = broker.consume(BACKFILL_QUEUE, prefetch=10, timeout=200)
    waiting = BACKFILL_PREFETCH + 2
    push(redises.sync, redises.namespace, [encode(BACKFILL_QUEUE, ACTOR, (f"old-{i}",)) for i in range(waiting)])
    held = [m for m in (next(backfill) for _ in range(BACKFILL_PREFETCH)) if m is not None]
    assert [m.args for m in held] == [(f"old-{i}",) for i in range(BACKFILL_PREFETCH)]
    assert next(backfill) is None  # more wait, but the share is in hand
    backfill.ack(held[0])
    following = next(backfill)
    assert following is not None and following.args == (f"old-{BACKFILL_PREFETCH}",)
