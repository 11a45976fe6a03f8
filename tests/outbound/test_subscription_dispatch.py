"""`workers/outbound/dispatch.py`, `workers/outbound/range_replay.py`, `workers/outbound/sweep.py`: which change
becomes which delivery, once — on the in-process Redis and, for the consumer group, on the real one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from schemas.settings import Settings
from tests.support.subscription_support import (
    BOTH_DATABASES,
    add_subscription,
    engine_fixture,  # noqa: F401 (the `engine` fixture)
    publish_change,
    queued_ids,
    redis_fixture,  # noqa: F401 (the `redis` fixture)
    settings_fixture,  # noqa: F401 (the `settings` fixture)
    stream_entries,
)
from workers.ledger.changes import ChangeFeed
from workers.ledger.tables import Delivery
from workers.ledger.worker_runtime import WorkerRuntime
from workers.outbound.dispatch import Dispatcher, delivery_id
from workers.outbound.range_replay import replay
from workers.outbound.sweep import STUCK_AFTER_SECONDS, sweep
from workers.runtime.broker import sync_redis

URL = "https://receiver.example/hook"


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.created_at))).all())


@BOTH_DATABASES
def test_each_change_becomes_one_delivery_per_subscription_whose_filter_matches(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    everything = add_subscription(engine, URL)
    completed = add_subscription(engine, URL, event_types=["sync.completed"])
    company_a = add_subscription(engine, URL, company_ids=["company-a"])
    failed_b = add_subscription(engine, URL, event_types=["sync.failed"], company_ids=["company-b"])
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    ns = settings.redis_namespace
    done_a = publish_change(redis, ns, "sync.completed", "company-a")
    failed_a = publish_change(redis, ns, "sync.failed", "company-a")
    failed_b_id = publish_change(redis, ns, "sync.failed", "company-b")

    assert dispatcher.step(block_ms=10) == 3

    got = {(d.subscription_id, d.event_id) for d in deliveries(engine)}
    assert got == {
        (everything.id, done_a),
        (everything.id, failed_a),
        (everything.id, failed_b_id),
        (completed.id, done_a),
        (company_a.id, done_a),
        (company_a.id, failed_a),
        (failed_b.id, failed_b_id),
    }
    kinds = {done_a: ("sync.completed", "company-a"), failed_a: ("sync.failed", "company-a")}
    kinds[failed_b_id] = ("sync.failed", "company-b")
    for row in deliveries(engine):  # each row carries its own change, whichever subscriptions shared it
        body = json.loads(row.body)
        assert (body["id"], body["type"], body["data"]["company_id"]) == (row.event_id, *kinds[row.event_id])
        assert (row.event_type, row.company_id) == kinds[row.event_id]
        assert (row.status, row.attempts, row.id) == ("pending", 0, delivery_id(row.subscription_id, row.event_id))
    assert sorted(queued_ids(redis, ns)) == sorted(d.id for d in deliveries(engine))
    assert redis.xpending(f"{ns}:changes", "subscriptions")["pending"] == 0


def test_a_platform_incident_goes_only_to_subscriptions_without_a_company_filter(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    everything = add_subscription(engine, URL)
    incidents = add_subscription(engine, URL, event_types=["platform.incident_opened"])
    add_subscription(engine, URL, company_ids=["company-a"])
    add_subscription(engine, URL, event_types=["platform.incident_closed"])
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    opened = publish_change(redis, settings.redis_namespace, "platform.incident_opened", "")
    assert dispatcher.step(block_ms=10) == 1
    assert {(d.subscription_id, d.event_id, d.company_id) for d in deliveries(engine)} == {
        (everything.id, opened, None),
        (incidents.id, opened, None),
    }


def test_a_delivery_carries_the_change_as_body_and_a_stable_id(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    sub = add_subscription(engine, URL)
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    change = publish_change(redis, settings.redis_namespace, "sync.started", "company-a", data_type="invoices")
    dispatcher.step(block_ms=10)

    (row,) = deliveries(engine)
    body = json.loads(row.body)
    assert row.id == delivery_id(sub.id, change)
    assert set(body) == {"id", "type", "created_at", "data"}
    assert (body["id"], body["type"], body["data"]["data_type"]) == (change, "sync.started", "invoices")
    millis = int(change.split("-")[0])
    assert body["created_at"] == datetime.fromtimestamp(millis / 1000, UTC).isoformat().replace("+00:00", "Z")


@BOTH_DATABASES
def test_a_change_dispatched_twice_is_recorded_and_queued_once(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    add_subscription(engine, URL)
    ns = settings.redis_namespace
    change = publish_change(redis, ns)
    first = Dispatcher(settings, engine, redis, consumer="one")
    first.ensure_group()
    entries = stream_entries(redis, ns)
    first.handle(entries)
    with Session(engine) as session, session.begin():  # the first attempt was made meanwhile
        (row,) = session.exec(select(Delivery)).all()
        row.attempts = 1

    first.handle(entries)

    assert len(deliveries(engine)) == 1
    assert len(queued_ids(redis, ns)) == 1
    assert deliveries(engine)[0].event_id == change


@BOTH_DATABASES
def test_a_change_dispatched_again_before_any_attempt_is_queued_again_but_stored_once(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    """The first message may have been lost with the process that stored the delivery."""
    subscriptions = [add_subscription(engine, URL), add_subscription(engine, URL)]
    ns = settings.redis_namespace
    old = publish_change(redis, ns)
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    dispatcher.handle(stream_entries(redis, ns))
    with Session(engine) as session, session.begin():  # one of the two was attempted meanwhile
        attempted = session.get(Delivery, delivery_id(subscriptions[0].id, old))
        assert attempted is not None
        attempted.attempts = 1
    new = publish_change(redis, ns)

    dispatcher.handle(stream_entries(redis, ns))  # the old change again, with a new one

    assert len(deliveries(engine)) == 4
    again = queued_ids(redis, ns)[2:]
    assert sorted(again) == sorted(
        [delivery_id(subscriptions[1].id, old), *(delivery_id(s.id, new) for s in subscriptions)]
    )


def test_changes_published_before_a_subscription_was_created_are_not_sent_to_it(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    publish_change(redis, settings.redis_namespace)
    add_subscription(engine, URL, created_at=datetime.now(UTC) + timedelta(seconds=5))

    dispatcher.step(block_ms=10)

    assert deliveries(engine) == []


def test_disabled_subscriptions_receive_nothing(settings: Settings, engine: Engine, redis: Redis) -> None:
    add_subscription(engine, URL, enabled=False, disabled_reason="manual")
    dispatcher = Dispatcher(settings, engine, redis, consumer="one")
    dispatcher.ensure_group()
    publish_change(redis, settings.redis_namespace)

    dispatcher.step(block_ms=10)

    assert deliveries(engine) == []


@pytest.mark.redis
def test_dispatchers_of_many_processes_share_the_stream_so_each_change_is_dispatched_once(
    settings: Settings, engine: Engine, redis_url: str, namespace: str
) -> None:
    real = settings.model_copy(update={"embedded": False, "redis_url": redis_url, "redis_namespace": namespace})
    add_subscription(engine, URL)
    client = sync_redis(real)
    one, two = (Dispatcher(real, engine, sync_redis(real), consumer=name) for name in ("one", "two"))
    one.ensure_group()
    two.ensure_group()
    published = [publish_change(client, namespace) for _ in range(300)]

    handled = [0, 0]
    while True:
        counts = one.step(block_ms=50), two.step(block_ms=50)
        if counts == (0, 0):
            break
        handled = [handled[0] + counts[0], handled[1] + counts[1]]

    assert handled[0] > 0 and handled[1] > 0
    assert sorted(d.event_id for d in deliveries(engine)) == sorted(published)
    assert len(queued_ids(client, namespace)) == 300


@pytest.mark.redis
def test_changes_left_unacknowledged_by_a_dead_dispatcher_are_claimed_by_another(
    settings: Settings, engine: Engine, redis_url: str, namespace: str
) -> None:
    real = settings.model_copy(update={"embedded": False, "redis_url": redis_url, "redis_namespace": namespace})
    add_subscription(engine, URL)
    client = sync_redis(real)
    Dispatcher(real, engine, client, consumer="dead").ensure_group()
    change = publish_change(client, namespace)
    client.xreadgroup("subscriptions", "dead", {f"{namespace}:changes": ">"}, count=10)  # read, then "died"
    survivor = Dispatcher(real, engine, client, consumer="alive", claim_idle_ms=0)

    survivor.step(block_ms=10)

    assert [d.event_id for d in deliveries(engine)] == [change]
    assert client.xpending(f"{namespace}:changes", "subscriptions")["pending"] == 0


def test_replay_sends_the_range_including_changes_from_before_the_subscription(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    ns = settings.redis_namespace
    before = datetime.now(UTC) - timedelta(seconds=1)
    old = [publish_change(redis, ns, "sync.completed", "company-a") for _ in range(3)]
    publish_change(redis, ns, "sync.failed", "company-a")
    publish_change(redis, ns, "sync.completed", "company-b")
    sub = add_subscription(engine, URL, event_types=["sync.completed"], company_ids=["company-a"])

    result = replay(engine, redis, ns, sub, before, datetime.now(UTC) + timedelta(seconds=1))

    assert (result.matched, result.queued, result.already_delivered, result.truncated) == (3, 3, 0, False)
    assert sorted(d.event_id for d in deliveries(engine)) == sorted(old)
    assert sorted(queued_ids(redis, ns)) == sorted(d.id for d in deliveries(engine))


@BOTH_DATABASES
def test_replay_skips_what_was_delivered_unless_asked_and_says_when_the_stream_no_longer_reaches_back(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    ns = settings.redis_namespace
    trimmed = publish_change(redis, ns)
    changes = [publish_change(redis, ns) for _ in range(2)]
    redis.xdel(f"{ns}:changes", trimmed)  # as retention would
    sub = add_subscription(engine, URL, created_at=datetime.now(UTC) - timedelta(hours=1))
    until = datetime.now(UTC) + timedelta(seconds=1)
    replay(engine, redis, ns, sub, until - timedelta(hours=1), until)
    with Session(engine) as session, session.begin():
        delivered = session.get(Delivery, delivery_id(sub.id, changes[0]))
        assert delivered is not None
        delivered.status = "delivered"

    again = replay(engine, redis, ns, sub, until - timedelta(hours=1), until)
    everything = replay(engine, redis, ns, sub, until - timedelta(hours=1), until, include_delivered=True)

    assert (again.matched, again.queued, again.already_delivered) == (2, 1, 1)
    assert (everything.matched, everything.queued) == (2, 2)
    assert again.truncated and again.oldest_available is not None
    assert len(deliveries(engine)) == 2


@BOTH_DATABASES
def test_the_sweeper_requeues_deliveries_whose_message_was_lost_and_prunes_old_finished_ones(
    settings: Settings, engine: Engine, redis: Redis
) -> None:
    sub = add_subscription(engine, URL)
    now = datetime.now(UTC)
    lost_at = now - timedelta(seconds=STUCK_AFTER_SECONDS + 10)
    old = now - timedelta(days=settings.subscriptions_delivery_retention_days + 1)
    rows = {
        "msg_lost": ("pending", lost_at, now),
        "msg_waiting": ("pending", now + timedelta(minutes=5), now),
        "msg_old_done": ("delivered", None, old),
        "msg_old_pending": ("pending", now + timedelta(minutes=5), old),
    }
    with Session(engine) as session, session.begin():
        for ident, (status, next_at, created) in rows.items():
            session.add(
                Delivery(
                    id=ident,
                    subscription_id=sub.id,
                    event_id="1-0",
                    event_type="sync.completed",
                    body="{}",
                    status=status,
                    next_attempt_at=next_at,
                    window_started_at=created,
                    created_at=created,
                )
            )
    runtime = WorkerRuntime(settings, engine, ChangeFeed(redis, settings.redis_namespace, 1000))

    result = sweep(runtime, now)

    assert result == "requeued=1 pruned=1"
    assert queued_ids(redis, settings.redis_namespace) == ["msg_lost"]
    assert sorted(d.id for d in deliveries(engine)) == ["msg_lost", "msg_old_pending", "msg_waiting"]
