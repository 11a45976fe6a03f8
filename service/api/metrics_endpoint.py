"""`GET /metrics`: Prometheus text, merged across every process (`workers/runtime/metrics.py`), plus what is
read fresh at scrape time: queue depths and ages and dead letters from Redis, the end-to-end lag, and from the
database the connections by freshness and health, the missed webhooks and the platform incidents open.
"""

from __future__ import annotations

import asyncio
import glob
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas.statuses import FRESHNESS, HEALTH
from service.common.services import services
from workers.ledger.freshness_state import SOURCE_TYPES, count_by_freshness, count_by_health
from workers.ledger.missed import count_missed
from workers.ledger.platform_incidents import count_open_incidents
from workers.runtime.metrics import LAST_FOLDED, forget_dead_processes, metrics, multiprocess_dir
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE, QueueState, queue_states

T = TypeVar("T")


@dataclass
class _Families:
    """A collector made of metric families already gathered (what `generate_latest` reads)."""

    families: list[Metric]

    def collect(self) -> Iterable[Metric]:
        return self.families


async def read_queues(redis: Any, namespace: str) -> list[QueueState] | None:
    """Every queue's state from Redis; None if Redis does not answer."""
    try:
        return await asyncio.wait_for(queue_states(redis, namespace), timeout=2)
    except (RedisError, OSError, TimeoutError):
        return None


def read_database(count: Callable[[Engine], T], engine: Engine) -> T | None:
    """`count(engine)`; None if the database does not answer."""
    try:
        return count(engine)
    except SQLAlchemyError:
        return None


def missed_family(counts: dict[str, int]) -> CounterMetricFamily:
    """`synctrack_webhooks_missed_total`: every source type, zeros included, so the first miss is an increase."""
    family = CounterMetricFamily(
        "synctrack_webhooks_missed",
        "Results reconciliation folded that no webhook had reported, by the connection's source type.",
        labels=["source_type"],
    )
    for source_type in sorted(SOURCE_TYPES):
        family.add_metric([source_type], counts.get(source_type, 0))
    return family


def state_family(kind: str, states: Iterable[str], counts: dict[tuple[str, str], int]) -> GaugeMetricFamily:
    """`synctrack_connections_by_{kind}`: every state of every source type seen, zeros included."""
    family = GaugeMetricFamily(
        f"synctrack_connections_by_{kind}",
        f"Connections (not deleted) by {kind} and source type, as last checked.",
        labels=[kind, "source_type"],
    )
    for source_type in sorted({source for _, source in counts}):
        for state in states:
            family.add_metric([state, source_type], counts.get((state, source_type), 0))
    return family


def render(
    queues: list[QueueState] | None,
    freshness: dict[tuple[str, str], int] | None = None,
    health: dict[tuple[str, str], int] | None = None,
    missed: dict[str, int] | None = None,
    incidents_open: int | None = None,
) -> bytes:
    """The exposition text: every process's metrics (or this process's), then the scrape-time gauges."""
    metrics()  # every metric exists (at zero) from the first scrape on
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        forget_dead_processes(path)
        try:
            families = list(multiprocess.MultiProcessCollector(None, path=path).collect())  # type: ignore[no-untyped-call]
        except (struct.error, OSError, ValueError):
            families = _merge_readable(path)
    else:
        from prometheus_client import REGISTRY

        families = list(REGISTRY.collect())
    last_folded = next(
        (s.value for f in families for s in f.samples if s.name == LAST_FOLDED and s.value > 0),
        None,
    )
    lag = GaugeMetricFamily(
        "synctrack_end_to_end_lag_seconds",
        "Now minus the generation time of the newest event folded (absent until one is folded).",
        value=None if last_folded is None else max(0.0, time.time() - last_folded),
    )
    families.append(lag)
    if queues is not None:
        families += queue_families(queues)
    families.append(
        GaugeMetricFamily("synctrack_redis_up", "1 if Redis answered this scrape.", value=0 if queues is None else 1)
    )
    if freshness is not None:
        families.append(state_family("freshness", FRESHNESS, freshness))
    if health is not None:  # deleted connections are not counted
        families.append(state_family("health", [state for state in HEALTH if state != "deleted"], health))
    if missed is not None:
        families.append(missed_family(missed))
    if incidents_open is not None:
        families.append(
            GaugeMetricFamily("synctrack_platform_incidents_open", "Platform incidents open now.", value=incidents_open)
        )
    return generate_latest(_Families(families))


def queue_families(queues: list[QueueState]) -> list[Metric]:
    """`synctrack_queue_depth{queue, state}`, `synctrack_queue_oldest_age_seconds{queue}` (0 while none waits) and
    `synctrack_dead_letters` (the webhook lanes', live and backfill)."""
    depth = GaugeMetricFamily(
        "synctrack_queue_depth",
        "Messages waiting on each queue; state delayed = waiting to retry.",
        labels=["queue", "state"],
    )
    age = GaugeMetricFamily(
        "synctrack_queue_oldest_age_seconds",
        "Seconds since the oldest message waiting on each queue was enqueued; 0 while none waits.",
        labels=["queue"],
    )
    for state in queues:
        depth.add_metric([state.queue, "waiting"], state.depth)
        depth.add_metric([state.queue, "delayed"], state.delayed)
        age.add_metric([state.queue], state.oldest_age_seconds or 0.0)
    dead = sum(s.dead_letters for s in queues if s.queue in (WEBHOOK_QUEUE, BACKFILL_QUEUE))
    return [
        depth,
        age,
        GaugeMetricFamily("synctrack_dead_letters", "Messages in the webhook queues' dead-letter queues.", value=dead),
    ]


def _merge_readable(path: str) -> list[Metric]:
    """The metrics of every file that can be read now: a process creating its file (empty for an instant)
    or one whose file was just removed must not turn the whole scrape into a 500."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    readable = []
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            MmapedDict.read_all_values_from_file(name)  # type: ignore[no-untyped-call]
        except (struct.error, OSError, ValueError):
            continue
        readable.append(name)
    return list(multiprocess.MultiProcessCollector.merge(readable, accumulate=True))  # type: ignore[no-untyped-call]


async def metrics_endpoint(request: Request) -> Response:
    shared = services(request)
    settings, engine = shared.settings, shared.engine
    queues = await read_queues(shared.redis, settings.redis_namespace)
    body = await asyncio.to_thread(
        lambda: render(
            queues,
            read_database(count_by_freshness, engine),
            read_database(count_by_health, engine),
            read_database(count_missed, engine),
            read_database(count_open_incidents, engine),
        )
    )
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint)]
