"""Periodic jobs (stale-sync marking, reconciliation, retention), run by the worker processes.

Every worker process runs one `PeriodicRunner` thread; a Redis ``SET NX EX`` per job and period
means one process in the whole deployment runs each job each period, however many are running.
A job is a plain function of the worker runtime; its interval comes from settings (0 = off).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from redis import Redis

from schemas.settings import Settings


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


R = TypeVar("R", bound=HasSettings)

log = logging.getLogger("synctrack.periodic")


@dataclass(frozen=True)
class PeriodicJob(Generic[R]):
    name: str
    interval: Callable[[R], float]
    """Seconds between runs, read from the runtime's settings; 0 or less turns the job off."""
    run: Callable[[R], object]


class PeriodicRunner(threading.Thread, Generic[R]):
    def __init__(self, runtime: R, redis: Redis, jobs: list[PeriodicJob[R]], tick: float = 1.0) -> None:
        super().__init__(name="synctrack-periodic", daemon=True)
        self.runtime, self.redis, self.jobs, self.tick = runtime, redis, jobs, tick
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.tick):
            for job in self.jobs:
                self.run_if_due(job)

    def run_if_due(self, job: PeriodicJob[R]) -> bool:
        interval = job.interval(self.runtime)
        if interval <= 0:
            return False
        key = f"{self.runtime.settings.redis_namespace}:periodic:{job.name}"
        try:
            if not self.redis.set(key, str(time.time()), nx=True, ex=max(1, int(interval))):
                return False
            started = time.monotonic()
            result = job.run(self.runtime)
            log.info("job=%s result=%s seconds=%.3f", job.name, result, time.monotonic() - started)
            return True
        except Exception:
            log.exception("job=%s result=error", job.name)
            return False
