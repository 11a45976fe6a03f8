"""Periodic jobs (stale-sync marking, reconciliation, retention), run by the worker processes.

Every worker process runs a `PeriodicRunner` thread per job, so a long run (a reconciliation of many
companies) delays no other job; a Redis ``SET NX EX`` per job and period means one process in the whole
deployment runs each job each period, however many are running. A job is a plain function of the worker
runtime; its interval comes from settings (0 = off). A job marked `at_start` also runs shortly after the
workers start — once for all the processes that start within `START_WINDOW_SECONDS` of each other — and
its period then counts from that run. Between runs a runner sleeps until its job is next due (the claim key's
expiry tells when), so an idle deployment's runners do not wake every tick; a job that is off sleeps for good.
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
        self._starting = {job.name for job in jobs if job.at_start}
        """The `at_start` jobs whose start run is still to be claimed (a Redis error leaves it for the next tick)."""

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        wait: float | None = self.tick
        while not self._stop_event.wait(wait):
            for job in self.jobs:
                self.run_if_due(job)
            waits = [self.until_due(job) for job in self.jobs]
            wait = min((w for w in waits if w is not None), default=None)

    def until_due(self, job: PeriodicJob[R]) -> float | None:
        """Seconds until `job` may be due again here (at least `tick`): when the claim of its current period
        expires; None for a job that is off. A Redis error or a missing claim means: look again after `tick`."""
        if job.interval(self.runtime) <= 0:
            return None
        key = f"{self.runtime.settings.redis_namespace}:periodic:{job.name}"
        try:
            remaining_ms = int(self.redis.pttl(key))
        except RedisError:
            return self.tick
        return max(self.tick, remaining_ms / 1000) if remaining_ms > 0 else self.tick

    def run_if_due(self, job: PeriodicJob[R]) -> bool:
        """Run `job` here if it is on and no process ran it within its interval, or if it is an `at_start` job
        this process has just started and no process starting with it ran it; return whether it ran."""
        interval = job.interval(self.runtime)
        if interval <= 0:
            return False
        key = f"{self.runtime.settings.redis_namespace}:periodic:{job.name}"
        period = max(1, int(interval))
        try:
            claimed = False
            if job.name in self._starting:
                claimed = bool(self.redis.set(f"{key}:start", str(time.time()), nx=True, ex=START_WINDOW_SECONDS))
                self._starting.discard(job.name)
                if claimed:
                    self.redis.set(key, str(time.time()), ex=period)  # the next period counts from this run
            if not claimed and not self.redis.set(key, str(time.time()), nx=True, ex=period):
                return False
            started = time.monotonic()
            result = job.run(self.runtime)
            log.info("job=%s result=%s seconds=%.3f", job.name, result, time.monotonic() - started)
            return True
        except Exception:
            log.exception("job=%s result=error", job.name)
            return False
