"""`WorkerRuntime`: what every worker-side job needs at run time — settings, the database, the change feed.

Built once per worker process by the composition root (`workers/main.py`) and handed to each actor and periodic
job; it owns nothing that starts at import. `close()` stops what was registered with `on_close` (the fold
batcher, the dispatcher) and disposes of the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from schemas.settings import Settings
from workers.ledger.changes import ChangeFeed
from workers.ledger.durations import DurationMemo
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.platform_incidents import IncidentSettings


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    feed: ChangeFeed | None
    durations: DurationMemo = field(default_factory=DurationMemo)
    """Typical durations the folds announce, remembered for a minute."""
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def freshness(self) -> FreshnessPolicy:
        """The freshness thresholds of `settings` (`SYNCTRACK_FRESHNESS_AFTER`, `_OVERRIDES`, `_SCHEDULE_FACTOR`,
        and whether Codat's schedules count: an API key is set)."""
        return FreshnessPolicy.from_settings(self.settings)

    @property
    def incidents(self) -> IncidentSettings:
        """The incident thresholds of `settings` (`SYNCTRACK_INCIDENT_*`)."""
        return IncidentSettings.from_settings(self.settings)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run `closer` when the runtime closes (last registered, first run)."""
        self._closers.append(closer)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        self.engine.dispose()
