"""`WorkerRuntime`: what every worker-side job needs at run time (settings, database, change feed), built once per
worker process by `workers/main.py`; `close()` runs what was registered with `on_close`, then disposes of the engine.
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
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def freshness(self) -> FreshnessPolicy:
        return FreshnessPolicy.from_settings(self.settings)

    @property
    def incidents(self) -> IncidentSettings:
        return IncidentSettings.from_settings(self.settings)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run `closer` when the runtime closes (last registered, first run)."""
        self._closers.append(closer)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        self.engine.dispose()
