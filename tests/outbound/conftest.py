"""Fixtures the outbound tests share: a local receiver that verifies signatures, and a deliverer on the test's
settings, engine and Redis (the fixtures of `tests/support/subscription_support.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import Engine

from schemas.settings import Settings
from tests.support.webhook_receiver import WebhookReceiver
from workers.outbound.deliver import Deliverer


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(slow_seconds=2.0) as server:
        yield server


@pytest.fixture
def deliverer(settings: Settings, engine: Engine, redis: Redis) -> Iterator[Deliverer]:
    deliverer = Deliverer(settings, engine, redis)
    yield deliverer
    deliverer.close()
