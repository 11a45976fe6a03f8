"""The freshness check: announce the connections whose freshness (or health) the clock changed.

When a threshold passes nothing is folded — no webhook says "your invoices are now a day old" — so, like
stale syncs, this is the clock's job. Every `SYNCTRACK_FRESHNESS_CHECK_SECONDS` (0 = off) a worker
compares every connection's freshness and health at `now` with what was last announced and announces the
differences (`workers.ledger.reassess`): ``connection.updated``; ``connection.freshness_changed`` when `freshness`
itself changed; ``connection.health_changed`` when `health` changed without a fold announcing it (a connection
never announced yet, a sync marked stale); all with `event_id` null. Changes a fold causes are announced by the
fold itself (`workers.ledger.announce`), so this check finds only the clock's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from workers.ledger.reassess import reassess
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime


def freshness_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_FRESHNESS_CHECK_SECONDS`; 0 turns the check off."""
    return runtime.settings.freshness_check_seconds


def check_freshness(runtime: WorkerRuntime, now: datetime | None = None) -> int:
    """Compare every connection's freshness at `now` with the last announced; announce and return the
    number of connections whose freshness changed."""
    return reassess(runtime.engine, runtime.feed, runtime.freshness, now or datetime.now(UTC))


FRESHNESS_JOB = PeriodicJob("check_freshness", freshness_interval, check_freshness)
