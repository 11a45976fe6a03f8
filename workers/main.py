"""The worker's composition root: the broker, the database, the change feed, then the actors."""

from __future__ import annotations

from schemas.settings import Settings
from workers.actors import WorkerRuntime, declare_actors
from workers.broker import make_broker, sync_redis
from workers.changes import ChangeFeed
from workers.db import make_engine, require_current_schema
from workers.periodic import PeriodicJob, PeriodicRunner


def build_worker(settings: Settings, *, check_schema: bool = True) -> tuple[object, WorkerRuntime]:
    client = sync_redis(settings)
    broker = make_broker(settings, client)
    engine = make_engine(settings.database_url)
    if check_schema:
        require_current_schema(engine, settings.database_url)
    runtime = WorkerRuntime(settings, engine, ChangeFeed(client, settings.redis_namespace, settings.stream_max_changes))
    declare_actors(broker, runtime)
    return broker, runtime


def periodic_jobs() -> list[PeriodicJob]:
    """Every periodic job of the worker processes; each is off when its interval setting is 0."""
    return []


def start_periodic(runtime: WorkerRuntime) -> PeriodicRunner:
    runner = PeriodicRunner(runtime, sync_redis(runtime.settings), periodic_jobs())
    runner.start()
    return runner
