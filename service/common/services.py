"""`Services`: what the web process's handlers and middleware share, built once by `create_app(settings)`.

Reached through `services(request)` or `services(scope["app"])`. Objects a capability owns (the stream's `Fanout`,
the revocation list) are found by their class: `services(request).get(Fanout)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from schemas.settings import Settings
from workers.codat.client import CodatClient
from workers.ledger.changes import ChangeFeed
from workers.ledger.freshness import FreshnessPolicy
from workers.outbound.deliver import Deliverer

T = TypeVar("T")


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    """The ledger, for handlers that write."""
    reads: Engine
    """The same database for reading only (the JSON API, the stream's snapshots): on SQLite, no write lock."""
    freshness: FreshnessPolicy
    redis: AsyncRedis
    """The event loop's Redis client."""
    admin_redis: Redis
    """One blocking Redis client for handlers in the thread pool (redis-py's pool is thread-safe)."""
    feed: ChangeFeed
    deliverer: Deliverer
    """Sends a subscription's test ping from the web process."""
    codat: CodatClient | None = None
    """Opened by the app's lifespan each time it starts (an HTTP client cannot be reopened once closed)."""
    owned: tuple[object, ...] = ()  # the objects the capabilities own, one of each class: see `get`

    def get(self, kind: type[T]) -> T:
        """The app's one object of class `kind` among `owned`; raises LookupError when it has none."""
        if (found := next((item for item in self.owned if isinstance(item, kind)), None)) is None:
            raise LookupError(f"the app holds no {kind.__name__}")
        return found


def services(where: HTTPConnection | Starlette) -> Services:
    """The `Services` of the app serving a request (or of the app itself)."""
    app = where.app if isinstance(where, HTTPConnection) else where
    found: Services = app.state.services
    return found
