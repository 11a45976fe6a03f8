"""`workers/outbound/deliver.py`: one attempt against a real local HTTP receiver, on SQLite and the in-process Redis."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session

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
    stream_entries,
)
from tests.support.webhook_receiver import WebhookReceiver
from workers.ledger.tables import Delivery, Subscription
from workers.outbound.deliver import Deliverer
from workers.outbound.dispatch import Dispatcher
from workers.outbound.record import RetryPolicy
from workers.outbound.views import signing_keys
from workers.runtime.metrics import metrics


def dispatch_one(settings: Settings, engine: Engine, redis: Redis, **change: Any) -> list[Delivery]:
    """Publish one change, dispatch it, return the deliveries it made."""
    dispatcher = Dispatcher(settings, engine, redis, consumer="test")
    dispatcher.ensure_group()
    change_id = publish_change(redis, settings.redis_namespace, **change)
    dispatcher.step(block_ms=10)
    with Session(engine) as session:
        from sqlmodel import select

        return list(session.exec(select(Delivery).where(Delivery.event_id == change_id)).all())


def stored(engine: Engine, delivery_id: str) -> Delivery:
    with Session(engine) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row


def subscription(engine: Engine, subscription_id: str) -> Subscription:
    with Session(engine) as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None
        return row


def disabled_count(reason: str) -> float:
    metrics()  # the counters exist from first use on
    return REGISTRY.get_sample_value("synctrack_subscriptions_disabled_total", {"reason": reason}) or 0.0


def delayed(redis: Redis, namespace: str) -> list[str]:
    return queued_ids(redis, namespace, delayed=True)


def test_a_delivery_is_signed_with_the_subscription_secret_and_recorded_as_delivered(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/ok"))
    receiver.expect("/ok", [sub.secret])
    (delivery,) = dispatch_one(settings, engine, redis, event="sync.completed")

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "delivered"
    (got,) = receiver.at("/ok")
    assert got.verified == {sub.secret: True}
    assert got.webhook_id == delivery.id
    assert got.body["id"] == delivery.event_id
    assert got.body["type"] == "sync.completed"
    assert got.body["data"]["company_id"] == "company-1"
    assert got.body["created_at"].endswith("Z")
    row = stored(engine, delivery.id)
    assert (row.status, row.attempts, row.last_response_code) == ("delivered", 1, 204)


@BOTH_DATABASES
def test_a_500_is_recorded_and_the_next_attempt_is_queued_after_a_backoff(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/flaky"))
    receiver.expect("/flaky", [sub.secret], script=[500])
    (delivery,) = dispatch_one(settings, engine, redis)

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "retry"
    assert attempt.retry_in is not None and 0.15 <= attempt.retry_in <= 0.25
    row = stored(engine, delivery.id)
    assert (row.status, row.attempts, row.last_response_code, row.last_error) == ("pending", 1, 500, "HTTP 500")
    assert delayed(redis, settings.redis_namespace) == [delivery.id]
    assert subscription(engine, sub.id).failing_since is not None


def test_timeouts_and_refused_connections_are_failures_that_are_retried(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    slow = add_subscription(engine, receiver.url("/slow"), event_types=["sync.started"])
    receiver.expect("/slow", [slow.secret], script=["timeout"])
    refused = add_subscription(engine, f"http://127.0.0.1:{free_port()}/nobody", event_types=["sync.failed"])

    (late,) = dispatch_one(settings, engine, redis, event="sync.started")
    (lost,) = dispatch_one(settings, engine, redis, event="sync.failed")
    timed_out, not_connected = deliverer.run(late.id), deliverer.run(lost.id)

    assert (timed_out.outcome, timed_out.error) == ("retry", "timeout after 1s")
    assert not_connected.outcome == "retry"
    assert not_connected.error and not_connected.error.startswith("connection failed")
    assert stored(engine, lost.id).last_response_code is None
    assert refused.id != slow.id


@BOTH_DATABASES
def test_a_duplicate_queue_message_does_not_send_the_delivery_twice(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/once"))
    receiver.expect("/once", [sub.secret])
    (delivery,) = dispatch_one(settings, engine, redis)

    first, second = deliverer.run(delivery.id), deliverer.run(delivery.id)

    assert (first.outcome, second.outcome) == ("delivered", "skipped")
    assert len(receiver.at("/once")) == 1


@BOTH_DATABASES
def test_410_gone_disables_the_subscription_and_announces_it_on_the_stream(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/gone"))
    receiver.expect("/gone", [sub.secret], script=[410])
    (delivery,) = dispatch_one(settings, engine, redis)
    disabled_before = disabled_count("gone")

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "gone"
    row = subscription(engine, sub.id)
    assert (row.enabled, row.disabled_reason) == (False, "gone")
    assert stored(engine, delivery.id).status == "failed"
    assert delayed(redis, settings.redis_namespace) == []
    *_, (_, fields) = stream_entries(redis, settings.redis_namespace)
    assert fields[b"event"] == b"subscription.disabled"
    announced = json.loads(fields[b"data"])
    assert (announced["id"], announced["disabled_reason"], announced["enabled"]) == (sub.id, "gone", False)
    assert "secret" not in announced
    assert disabled_count("gone") == disabled_before + 1


@BOTH_DATABASES
def test_a_subscription_failing_for_longer_than_the_limit_is_disabled(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver
) -> None:
    deliverer = Deliverer(settings.model_copy(update={"subscriptions_disable_after_seconds": 3600}), engine, redis)
    since = datetime.now(UTC) - timedelta(hours=2)
    sub = add_subscription(engine, receiver.url("/down"), failing_since=since)
    receiver.expect("/down", [sub.secret], script=[503])
    (delivery,) = dispatch_one(settings, engine, redis)

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "disabled"
    row = subscription(engine, sub.id)
    assert (row.enabled, row.disabled_reason) == (False, "failing")
    events = [fields[b"event"] for _, fields in stream_entries(redis, settings.redis_namespace)]
    assert events.count(b"subscription.disabled") == 1
    deliverer.close()


@BOTH_DATABASES
def test_a_success_ends_the_failing_streak(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/back"), failing_since=datetime.now(UTC) - timedelta(hours=1))
    receiver.expect("/back", [sub.secret])
    (delivery,) = dispatch_one(settings, engine, redis)

    deliverer.run(delivery.id)

    assert subscription(engine, sub.id).failing_since is None


def test_retries_stop_once_the_retry_window_is_spent(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver
) -> None:
    deliverer = Deliverer(settings.model_copy(update={"subscriptions_retry_window_seconds": 0.1}), engine, redis)
    sub = add_subscription(engine, receiver.url("/never"))
    receiver.expect("/never", [sub.secret], script=[500])
    (delivery,) = dispatch_one(settings, engine, redis)

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "failed"
    assert stored(engine, delivery.id).status == "failed"
    assert delayed(redis, settings.redis_namespace) == []
    deliverer.close()


def test_a_disabled_subscription_gets_no_attempt(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, deliverer: Deliverer
) -> None:
    sub = add_subscription(engine, receiver.url("/paused"))
    (delivery,) = dispatch_one(settings, engine, redis)
    with Session(engine) as session, session.begin():
        row = session.get(Subscription, sub.id)
        assert row is not None
        row.enabled, row.disabled_reason = False, "manual"

    attempt = deliverer.run(delivery.id)

    assert attempt.outcome == "failed"
    assert receiver.at("/paused") == []
    assert stored(engine, delivery.id).last_error == "subscription disabled"


def test_a_url_on_a_private_address_is_refused_at_send_time_unless_allowed(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver
) -> None:
    strict = Deliverer(settings.model_copy(update={"subscriptions_allow_private": False}), engine, redis)
    sub = add_subscription(engine, receiver.url("/internal"))
    (delivery,) = dispatch_one(settings, engine, redis)

    attempt = strict.run(delivery.id)

    assert attempt.outcome == "retry"
    assert attempt.error and "not a public address" in attempt.error
    assert receiver.at("/internal") == []
    assert sub.url.startswith("http://127.0.0.1")
    strict.close()


def test_backoff_doubles_from_the_minimum_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(min_seconds=5, max_seconds=3600, window_seconds=86400)
    rng = random.Random(7)
    delays = [policy.delay(n, rng) for n in range(1, 16)]
    for n, delay in enumerate(delays, start=1):
        base = min(3600, 5 * 2 ** (n - 1))
        assert 0.75 * base <= delay <= 1.25 * base
    assert len({round(d, 3) for d in delays[-4:]}) == 4  # jitter: capped delays still differ


def test_default_retries_span_about_a_day() -> None:
    settings = Settings(_env_file=None)
    policy = RetryPolicy.from_settings(settings)
    elapsed, attempts = 0.0, 1
    while elapsed + (delay := policy.delay(attempts, random.Random(attempts))) <= policy.window_seconds:
        elapsed += delay
        attempts += 1
    assert 18 * 3600 < elapsed <= 24 * 3600
    assert 12 <= attempts <= 20


def test_during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one() -> None:
    now = datetime.now(UTC)
    row = Subscription(
        id="sub_x",
        url="https://example.com",
        secret="whsec_new",
        previous_secret="whsec_old",
        previous_secret_expires_at=now + timedelta(hours=24),
        created_at=now,
        updated_at=now,
    )
    assert signing_keys(row, now) == ["whsec_new", "whsec_old"]
    assert signing_keys(row, now + timedelta(hours=25)) == ["whsec_new"]
