"""The freshness check: announce the connections whose freshness (or health) the clock changed.

Nothing is folded when a threshold passes, so every `SYNCTRACK_FRESHNESS_CHECK_SECONDS` (0 = off) a worker compares
every connection's freshness and health at `now` with what was last announced and announces the differences
(`workers.ledger.reassess`), with `event_id` null. Changes a fold causes are announced by the fold itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from workers.ledger.reassess import reassess
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime


def check_freshness(runtime: WorkerRuntime, now: datetime | None = None) -> int:
    """Compare every connection's freshness at `now` with the last announced; announce and return the
    number of connections whose freshness changed."""
    return reassess(runtime.engine, runtime.feed, runtime.freshness, now or datetime.now(UTC))


FRESHNESS_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "check_freshness", lambda runtime: runtime.settings.freshness_check_seconds, check_freshness
)
