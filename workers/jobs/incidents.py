"""The incident check: every `SYNCTRACK_INCIDENT_CHECK_SECONDS` (0 = off) one worker opens and closes platform
incidents as the clock moves the window (`workers.ledger.platform_incidents`): an incident also closes when its
failures leave the window with nothing folded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from workers.ledger.platform_incidents import check_incidents
from workers.runtime.periodic import PeriodicJob

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime


def incident_interval(runtime: WorkerRuntime) -> float:
    """Seconds between runs: `SYNCTRACK_INCIDENT_CHECK_SECONDS`; 0 turns the check off."""
    return runtime.settings.incident_check_seconds


def run_incident_check(runtime: WorkerRuntime, now: datetime | None = None) -> str:
    """One check at `now`; says how many incidents opened or closed."""
    when = now or datetime.now(UTC)
    return f"changed={check_incidents(runtime.engine, runtime.feed, runtime.incidents, runtime.freshness, when)}"


INCIDENT_JOB = PeriodicJob("check_incidents", incident_interval, run_incident_check)
