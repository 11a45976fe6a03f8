"""The dramatiq broker and the Redis clients, configured in one place.

Production: dramatiq's `RedisBroker` (`workers.runtime.redis_queues.QueueBroker`) on `SYNCTRACK_REDIS_URL`.
Embedded (`synctrack dev`): the same broker code on an in-process Redis (fakeredis with Lua), shared by the web
side and the in-process worker of that one process. Keys live under `SYNCTRACK_REDIS_NAMESPACE`:

* ``{ns}:webhooks`` — dramatiq's queue of live webhooks to fold (its layout: `workers.runtime.redis_queues`)
* ``{ns}:backfill`` — the backfill queue: webhooks generated before `SYNCTRACK_LIVE_WINDOW`, replays, imports
* ``{ns}:seen:{message id}`` — receiver de-duplication, expires after the dedupe window
* ``{ns}:changes`` — the change feed (a Redis Stream)

fakeredis (with its Lua runtime, ~4 MiB of modules) is imported only by an embedded process, when it
first asks for a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dramatiq
import redis
import redis.asyncio

from schemas.settings import Settings
from workers.runtime.redis_queues import BACKFILL_QUEUE as BACKFILL_QUEUE
from workers.runtime.redis_queues import WEBHOOK_QUEUE as WEBHOOK_QUEUE
from workers.runtime.redis_queues import QueueBroker

if TYPE_CHECKING:
    import fakeredis

FOLD_ACTOR = "fold_webhook"
"""Folds one webhook: what a batch message's event is split out into when it alone fails, and what older
deployments and redriven dead letters carry."""
FOLD_BATCH_ACTOR = "fold_webhooks"
"""Folds every webhook of one receiver batch (`[[message id, body, received at], …]`) in one transaction."""
FOLD_BACKFILL_ACTOR = "fold_backfill"
"""`fold_webhooks` on the backfill queue: the receiver's batch of webhooks generated before the live window."""
FOLD_STORED_ACTOR = "fold_stored"
"""Folds many stored events in one message: what replays send, so a replay folds in large batches."""

_embedded_server: fakeredis.FakeServer | None = None


def embedded_server() -> fakeredis.FakeServer:
    """The one in-process Redis of an embedded (`synctrack dev`) process."""
    global _embedded_server
    if _embedded_server is None:
        import fakeredis

        _embedded_server = fakeredis.FakeServer()
    return _embedded_server


def sync_redis(settings: Settings) -> redis.Redis:
    if settings.embedded:
        import fakeredis

        return fakeredis.FakeRedis(server=embedded_server())
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


def async_redis(settings: Settings) -> redis.asyncio.Redis:
    if settings.embedded:
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=embedded_server())
    # A blocking pool: under a burst, a request waits for a free connection instead of failing.
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=64, timeout=5, socket_timeout=10, socket_connect_timeout=5
    )
    return redis.asyncio.Redis(connection_pool=pool)


def make_broker(settings: Settings, client: redis.Redis | None = None) -> QueueBroker:
    """The worker's broker: an idle consumer is woken by each enqueue on its queue, and looks again by itself after
    `SYNCTRACK_WORKER_POLL_MS` at most (a second at most)."""
    broker = QueueBroker(
        client=client or sync_redis(settings),
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        idle_wait_ms=settings.worker_poll_ms,
    )
    dramatiq.set_broker(broker)
    return broker
