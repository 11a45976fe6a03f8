"""Periodic jobs, run by the worker processes: a thread per job in every process, and a Redis ``SET NX EX`` per
job and period so that one process in the whole deployment runs each job each period. Between runs a runner
sleeps until the claim expires; a job whose interval setting is 0 is off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from redis import Redis, RedisError

from schemas.settings import Settings


class HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


R = TypeVar("R", bound=HasSettings)

log = logging.getLogger("synctrack.periodic")

START_WINDOW_SECONDS = 600
"""Worker processes starting within this long of each other (a deploy, a restart) run an `at_start` job once."""


@dataclass(frozen=True)
class PeriodicJob(Generic[R]):
    name: str
    interval: Callable[[R], float]
    """Seconds between runs, read from the runtime's settings; 0 or less turns the job off."""
    run: Callable[[R], object]
    at_start: bool = False
    """Also run shortly after the workers start, not only once a period has passed since the last run."""


class PeriodicRunner(threading.Thread, Generic[R]):
    def __init__(self, runtime: R, redis: Redis, jobs: list[PeriodicJob[R]], tick: float = 1.0) -> None:
        super().__init__(name=f"synctrack-periodic-{'+'.join(job.name for job in jobs)}", daemon=True)
        self.runtime, self.redis, self.jobs, self.tick = runtime, redis, jobs, tick
        self._stop_event = threading.Event()
        self._starting = {job.name for job in jobs if job.at_start}  # start runs still to be claimed

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        wait: float | None = self.tick
        while not self._stop_event.wait(wait):
            for job in self.jobs:
                self.run_if_due(job)
            waits = [self.until_due(job) for job in self.jobs]
            wait = min((w for w in waits if w is not None), default=None)

    def _key(self, job: PeriodicJob[R]) -> str:
        return f"{self.runtime.settings.redis_namespace}:periodic:{job.name}"

    def until_due(self, job: PeriodicJob[R]) -> float | None:
        """Seconds until `job` may be due again (when its claim expires, at least `tick`); None if it is off."""
        if job.interval(self.runtime) <= 0:
            return None
        try:
            remaining_ms = int(self.redis.pttl(self._key(job)))
        except RedisError:
            return self.tick
        return max(self.tick, remaining_ms / 1000)  # no claim (-2) or no expiry (-1): after `tick`

    def run_if_due(self, job: PeriodicJob[R]) -> bool:
        """Run `job` here if it is on and no process ran it within its interval (or, for an `at_start` job, since
        the processes starting with this one started); return whether it ran."""
        interval = job.interval(self.runtime)
        if interval <= 0:
            return False
        key = self._key(job)
        period = max(1, int(interval))
        try:
            now = str(time.time())
            claimed = job.name in self._starting and self.redis.set(
                f"{key}:start", now, nx=True, ex=START_WINDOW_SECONDS
            )
            self._starting.discard(job.name)
            # A start run takes the period whoever held it (the next period counts from this run).
            if not self.redis.set(key, now, nx=not claimed, ex=period):
                return False
            started = time.monotonic()
            result = job.run(self.runtime)
            log.info("job=%s result=%s seconds=%.3f", job.name, result, time.monotonic() - started)
            return True
        except Exception:
            log.exception("job=%s result=error", job.name)
            return False
