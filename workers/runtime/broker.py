"""The dramatiq broker and the Redis clients, configured in one place.

Production uses `SYNCTRACK_REDIS_URL`; an embedded process (`synctrack dev`) uses one in-process Redis (fakeredis,
imported only then) shared by its web side and its worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dramatiq
import redis
import redis.asyncio

from schemas.settings import Settings
from workers.runtime.redis_queues import QueueBroker

if TYPE_CHECKING:
    import fakeredis

FOLD_ACTOR = "fold_webhook"
"""One webhook: an event split out of a batch that failed alone, or what older deployments queued."""
FOLD_BATCH_ACTOR = "fold_webhooks"
"""One receiver batch (`[[message id, body, received at], …]`), folded in one transaction."""
FOLD_BACKFILL_ACTOR = "fold_backfill"
"""`fold_webhooks` on the backfill queue (webhooks generated before the live window)."""
FOLD_STORED_ACTOR = "fold_stored"
"""Many stored events folded again (replays)."""

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
    """The worker's broker, set as dramatiq's global broker."""
    broker = QueueBroker(
        client=client or sync_redis(settings),
        namespace=settings.redis_namespace,
        heartbeat_timeout=settings.worker_heartbeat_timeout_ms,
        idle_wait_ms=settings.worker_poll_ms,
    )
    dramatiq.set_broker(broker)
    return broker
