"""Deliveries travel in batches: one queue message, one claim and one record transaction for many attempts.

Against a real local HTTP receiver, on SQLite and PostgreSQL, with the dispatcher queueing the messages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from schemas.settings import Settings
from tests.support.services import free_port
from tests.support.subscription_support import (
    BOTH_DATABASES,
    add_subscription,
    engine_fixture,  # noqa: F401 (the `engine` fixture)
    publish_change,
    queued_ids,
    redis_fixture,  # noqa: F401 (the `redis` fixture)
    settings_fixture,  # noqa: F401 (the `settings` fixture)
)
from tests.support.webhook_receiver import WebhookReceiver
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.deliver import Deliverer
from workers.outbound.dispatch import Dispatcher
from workers.outbound.signing import new_secret
from workers.runtime.delivery_queue import (
    BATCH_SIZE,
    DELIVER_BATCH_ACTOR,
    DELIVERY_QUEUE,
    SPREAD,
    enqueue_deliveries,
)
from workers.runtime.metrics import metrics
from workers.runtime.redis_queues import drop_waiting
from workers.runtime.redis_queues import queued_messages as queued


def queued_messages(redis: Redis, namespace: str) -> list[dict[str, Any]]:
    return [message.asdict() for message in queued(redis, namespace, DELIVERY_QUEUE)]


def dispatch(settings: Settings, engine: Engine, redis: Redis, changes: int) -> list[Delivery]:
    dispatcher = Dispatcher(settings, engine, redis, consumer="test")
    dispatcher.ensure_group()
    for _ in range(changes):
        publish_change(redis, settings.redis_namespace)
    dispatcher.step(block_ms=10)
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.id))).all())


def delivered_count() -> float:
    metrics()
    return REGISTRY.get_sample_value("synctrack_subscription_deliveries_total", {"outcome": "delivered"}) or 0.0


@BOTH_DATABASES
def test_the_dispatcher_queues_one_batch_message_that_delivers_every_change_to_every_subscription_once(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    first = add_subscription(engine, receiver.url("/first"))
    second = add_subscription(engine, receiver.url("/second"))
    receiver.expect("/first", [first.secret])
    receiver.expect("/second", [second.secret])
    rows = dispatch(settings, engine, redis, changes=3)
    messages = queued_messages(redis, settings.redis_namespace)
    counted = delivered_count()

    (message,) = messages
    attempts = deliverer.run_batch(message["args"][0])
    again = deliverer.run_batch(message["args"][0])  # the same message twice: at least once, never twice

    assert message["actor_name"] == DELIVER_BATCH_ACTOR
    assert sorted(message["args"][0]) == [row.id for row in rows] and len(rows) == 6
    assert [a.outcome for a in attempts] == ["delivered"] * 6
    assert [a.outcome for a in again] == ["skipped"] * 6
    received = receiver.at("/first") + receiver.at("/second")
    assert sorted(r.webhook_id for r in received) == [row.id for row in rows]
    assert all(all(r.verified.values()) for r in received)
    with Session(engine) as session:
        stored = session.exec(select(Delivery)).all()
    assert {(d.status, d.attempts, d.last_response_code) for d in stored} == {("delivered", 1, 204)}
    assert delivered_count() - counted == 6


def test_a_backlog_is_queued_a_full_batch_per_message(settings: Settings, redis: Redis) -> None:
    ids = [f"msg_{i:05d}" for i in range(SPREAD * BATCH_SIZE + 1)]

    enqueue_deliveries(redis, settings.redis_namespace, ids)

    sizes = [len(m["args"][0]) for m in queued_messages(redis, settings.redis_namespace)]
    assert sizes == [BATCH_SIZE] * SPREAD + [1]
    assert queued_ids(redis, settings.redis_namespace) == ids


@pytest.mark.parametrize(("count", "sizes"), [(3, [3]), (40, [25, 15]), (200, [25] * 8), (801, [101] * 7 + [94])])
def test_a_small_burst_is_spread_over_several_messages_for_several_threads(
    settings: Settings, redis: Redis, count: int, sizes: list[int]
) -> None:
    ids = [f"msg_{i:04d}" for i in range(count)]

    enqueue_deliveries(redis, settings.redis_namespace, ids)

    assert [len(m["args"][0]) for m in queued_messages(redis, settings.redis_namespace)] == sizes
    assert queued_ids(redis, settings.redis_namespace) == ids


@BOTH_DATABASES
def test_a_destination_that_does_not_answer_gets_one_attempt_per_batch_and_the_rest_are_released(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    working = add_subscription(engine, receiver.url("/working"))
    receiver.expect("/working", [working.secret])
    dead = add_subscription(engine, f"http://127.0.0.1:{free_port()}/nobody")
    rows = dispatch(settings, engine, redis, changes=3)
    drop_waiting(redis, settings.redis_namespace, DELIVERY_QUEUE)

    attempts = {a.delivery_id: a for a in deliverer.run_batch([row.id for row in rows])}

    to_dead = [row.id for row in rows if row.subscription_id == dead.id]
    outcomes = sorted(attempts[i].outcome for i in to_dead)
    assert outcomes == ["released", "released", "retry"]
    assert [attempts[row.id].outcome for row in rows if row.subscription_id == working.id] == ["delivered"] * 3
    released = sorted(i for i in to_dead if attempts[i].outcome == "released")
    assert sorted(queued_ids(redis, settings.redis_namespace)) == released
    assert len(queued_ids(redis, settings.redis_namespace, delayed=True)) == 1
    with Session(engine) as session:
        for delivery_id in released:
            row = session.get(Delivery, delivery_id)
            assert row is not None and (row.status, row.attempts, row.last_error) == ("pending", 0, None)


@BOTH_DATABASES
def test_a_subscription_changed_between_two_batches_is_sent_to_as_it_is_now(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    """The deliverer reuses a subscription's object while its row is unchanged; a rotated secret, a new URL or
    a disabled subscription takes effect at the very next batch of the same process."""
    subscription = add_subscription(engine, receiver.url("/old"))
    old_secret, new = subscription.secret, new_secret()
    receiver.expect("/old", [old_secret])
    receiver.expect("/new", [old_secret, new])
    rows = dispatch(settings, engine, redis, changes=4)
    drop_waiting(redis, settings.redis_namespace, DELIVERY_QUEUE)

    first = deliverer.run_batch([rows[0].id])
    same = deliverer.run_batch([rows[1].id])
    with Session(engine) as session, session.begin():
        row = session.get(Subscription, subscription.id)
        assert row is not None
        row.url, row.secret, row.previous_secret = receiver.url("/new"), new, old_secret
        row.previous_secret_expires_at = datetime.now(UTC) + timedelta(hours=1)
    changed = deliverer.run_batch([rows[2].id])
    with Session(engine) as session, session.begin():
        row = session.get(Subscription, subscription.id)
        assert row is not None
        row.enabled = False
    disabled = deliverer.run_batch([rows[3].id])

    assert [a.outcome for a in first + same + changed] == ["delivered"] * 3
    assert [(r.webhook_id, r.verified) for r in receiver.at("/old")] == [
        (rows[0].id, {old_secret: True}),
        (rows[1].id, {old_secret: True}),
    ]
    (after,) = receiver.at("/new")
    assert (after.webhook_id, after.verified) == (rows[2].id, {old_secret: True, new: True})
    assert [(a.outcome, a.error) for a in disabled] == [("failed", "subscription disabled")]
    assert len(receiver.at("/old") + receiver.at("/new")) == 3
