"""One connection pool per destination: connections are reused delivery after delivery, and the destination's
name is checked again after `RECHECK_SECONDS`, so a rebinding to an internal address is refused then.

Driven as the worker drives it: changes on the stream, the dispatcher's messages, `Deliverer.run_batch`
against a real local receiver that counts the TCP connections it accepts. The destination's clock is
the test's, so "60 seconds later" is a line of the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import Engine

from schemas.settings import Settings
from tests.support.subscription_support import (
    add_subscription,
    engine_fixture,  # noqa: F401 (the `engine` fixture)
    publish_change,
    queued_ids,
    redis_fixture,  # noqa: F401 (the `redis` fixture)
    settings_fixture,  # noqa: F401 (the `settings` fixture)
)
from tests.support.webhook_receiver import WebhookReceiver
from workers.outbound.deliver import Deliverer
from workers.outbound.dispatch import Dispatcher
from workers.outbound.record import Attempt
from workers.outbound.transport import RECHECK_SECONDS
from workers.runtime.delivery_queue import DELIVERY_QUEUE
from workers.runtime.redis_queues import drop_waiting

NAME = "hooks.partner.example"
PUBLIC = "93.184.215.14"
"""A public address: the check approves it; the patched socket layer carries its connections to the receiver."""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Network:
    """The name's DNS answers (scripted) and where connections were opened to, as the socket layer saw them."""

    def __init__(self, receiver_port: int) -> None:
        self.answer = PUBLIC
        self.lookups = 0
        self.connected: list[str] = []
        self.receiver_port = receiver_port


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver) -> Iterator[Network]:
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    network = Network(receiver.port)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == NAME:
            network.lookups += 1
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (network.answer, int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        network.connected.append(address[0])
        if address[0] == PUBLIC:  # the public internet, played by the local receiver
            return real_connect(("127.0.0.1", network.receiver_port), *args, **kwargs)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield network


class Worker:
    """A dispatcher and a deliverer on one database and Redis, with the test's clock."""

    def __init__(self, settings: Settings, engine: Engine, redis: Redis) -> None:
        self.settings, self.redis = settings, redis
        self.dispatcher = Dispatcher(settings, engine, redis, consumer="test")
        self.dispatcher.ensure_group()
        self.deliverer = Deliverer(settings, engine, redis)
        self.clock = Clock()
        self.deliverer.destinations.clock = self.clock

    def deliver_new_changes(self, changes: int = 1) -> list[Attempt]:
        """Publish `changes`, dispatch them, and run each queued message as one batch."""
        for _ in range(changes):
            publish_change(self.redis, self.settings.redis_namespace)
        self.dispatcher.step(block_ms=10)
        ids = queued_ids(self.redis, self.settings.redis_namespace)
        drop_waiting(self.redis, self.settings.redis_namespace, DELIVERY_QUEUE)
        return [
            attempt for start in range(0, len(ids), 2) for attempt in self.deliverer.run_batch(ids[start : start + 2])
        ]


@pytest.fixture
def worker(settings: Settings, engine: Engine, redis: Redis) -> Iterator[Worker]:
    worker = Worker(settings, engine, redis)
    yield worker
    worker.deliverer.close()


def test_deliveries_to_one_destination_share_one_connection_across_batches_and_rechecks(
    engine: Engine, receiver: WebhookReceiver, worker: Worker
) -> None:
    first = add_subscription(engine, receiver.url("/first"))
    second = add_subscription(engine, receiver.url("/second"))
    receiver.expect("/first", [first.secret])
    receiver.expect("/second", [second.secret])

    early = worker.deliver_new_changes(3)  # 6 deliveries, in 3 batches of 2
    worker.clock.now += RECHECK_SECONDS + 1  # checked again: the same address keeps the pool
    late = worker.deliver_new_changes(2)

    assert [a.outcome for a in early + late] == ["delivered"] * 10
    assert len(receiver.at("/first", ok_only=True)) == len(receiver.at("/second", ok_only=True)) == 5
    assert receiver.connections == 1


def test_a_destination_rebound_to_a_private_address_is_refused_when_its_name_is_checked_again(
    settings: Settings, engine: Engine, redis: Redis, receiver: WebhookReceiver, network: Network
) -> None:
    worker = Worker(settings.model_copy(update={"subscriptions_allow_private": False}), engine, redis)
    subscription = add_subscription(engine, f"http://{NAME}:{receiver.port}/hook")
    receiver.expect("/hook", [subscription.secret])
    try:
        before = worker.deliver_new_changes()
        network.answer = "127.0.0.1"  # re-pointed at an internal address
        within = worker.deliver_new_changes()  # the approval still holds: the pinned connection is used
        lookups_within = network.lookups
        worker.clock.now += RECHECK_SECONDS + 1
        after = worker.deliver_new_changes()
    finally:
        worker.deliverer.close()

    assert [a.outcome for a in before + within] == ["delivered", "delivered"]
    assert lookups_within == 1, "the name was resolved again before the approval ran out"
    assert [a.outcome for a in after] == ["retry"]
    assert after[0].error is not None and "not a public address" in after[0].error
    assert network.lookups == 2
    assert network.connected == [PUBLIC], "only the approved address was ever connected to"
    assert receiver.connections == 1


def test_each_url_is_checked_even_when_its_destination_is_approved(
    engine: Engine, receiver: WebhookReceiver, worker: Worker
) -> None:
    good = add_subscription(engine, receiver.url("/good"))
    receiver.expect("/good", [good.secret])
    first = worker.deliver_new_changes()  # the destination is approved, its pool open
    add_subscription(engine, receiver.url("/bad#fragment"))  # stored before the rule, say: never accepted now

    attempts = {a.outcome: a for a in worker.deliver_new_changes()}

    assert [a.outcome for a in first] == ["delivered"]
    assert sorted(attempts) == ["delivered", "retry"]
    assert attempts["retry"].error == "url refused: url must not have a #fragment"
    assert len(receiver.at("/good")) == 2 and len(receiver.received) == 2
