"""The worker's composition root: the broker, the database, the change feed, then the actors."""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker

from schemas.settings import Settings
from workers.codat.importer import declare_imports
from workers.codat.overdue_reconcile import OVERDUE_RECONCILE_JOB
from workers.codat.reconcile import RECONCILE_JOB
from workers.codat.still_running import ask_codat
from workers.codat.sync_settings import SETTINGS_JOB, declare_sync_settings
from workers.codat.system_refresh import INCIDENT_REFRESH_JOB, KEEPALIVE_JOB
from workers.ingest.actors import declare_actors
from workers.jobs.freshness_check import FRESHNESS_JOB
from workers.jobs.incidents import INCIDENT_JOB
from workers.jobs.retention import PRUNE_JOB
from workers.jobs.stale import stale_job
from workers.ledger.changes import ChangeFeed
from workers.ledger.worker_runtime import WorkerRuntime
from workers.ops.actors import declare_ops
from workers.outbound.actors import declare_delivery_actor
from workers.outbound.dispatch import start_dispatcher
from workers.outbound.sweep import SWEEP_JOB
from workers.runtime.broker import make_broker, sync_redis
from workers.runtime.db import make_engine, require_current_schema
from workers.runtime.periodic import PeriodicJob, PeriodicRunner


def build_worker(settings: Settings, *, check_schema: bool = True) -> tuple[RedisBroker, WorkerRuntime]:
    client = sync_redis(settings)
    broker = make_broker(settings, client)
    engine = make_engine(settings.database_url)
    if check_schema:
        require_current_schema(engine)
    feed = ChangeFeed(
        client, settings.redis_namespace, settings.stream_max_changes, settings.stream_retention_hours * 3600
    )
    runtime = WorkerRuntime(settings, engine, feed)
    declare_actors(broker, runtime, companies_created=declare_sync_settings(broker, runtime))
    declare_delivery_actor(broker, runtime)
    declare_ops(broker, runtime)
    declare_imports(broker, runtime)
    return broker, runtime


def periodic_jobs() -> list[PeriodicJob[WorkerRuntime]]:
    """Every periodic job of the worker processes; each is off when its interval setting is 0."""
    return [
        SWEEP_JOB,
        stale_job(ask_codat),
        FRESHNESS_JOB,
        RECONCILE_JOB,
        OVERDUE_RECONCILE_JOB,
        INCIDENT_JOB,
        INCIDENT_REFRESH_JOB,
        SETTINGS_JOB,
        KEEPALIVE_JOB,
        PRUNE_JOB,
    ]


def start_periodic(runtime: WorkerRuntime) -> list[PeriodicRunner[WorkerRuntime]]:
    """Start this process's background threads (one per periodic job, and the outbound dispatcher), stopped by
    `runtime.close()`; return the periodic runners."""
    redis = sync_redis(runtime.settings)
    runners = [PeriodicRunner(runtime, redis, [job]) for job in periodic_jobs()]
    for runner in runners:
        runner.start()
        runtime.on_close(runner.stop)
    dispatcher = start_dispatcher(runtime.settings, runtime.engine, sync_redis(runtime.settings))
    if dispatcher is not None:
        runtime.on_close(dispatcher.stop)
    return runners
