"""The periodic runner (`workers/runtime/periodic.py`): one run per period across every worker process, and an
`at_start` job once more shortly after the workers start."""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis

from schemas.settings import Settings
from workers.runtime.periodic import START_WINDOW_SECONDS, PeriodicJob, PeriodicRunner

HOUR = 3600


@dataclass
class Runtime:
    settings: Settings = field(default_factory=lambda: Settings(redis_namespace="periodic", _env_file=None))
    runs: int = 0


def count_run(runtime: Runtime) -> int:
    runtime.runs += 1
    return runtime.runs


def job(*, at_start: bool, every: float = 6 * HOUR) -> PeriodicJob[Runtime]:
    return PeriodicJob("repair", lambda runtime: every, count_run, at_start=at_start)


def process(server: fakeredis.FakeServer, runtime: Runtime, repair: PeriodicJob[Runtime]) -> PeriodicRunner[Runtime]:
    """The runner of one worker process that has just started, on the deployment's Redis."""
    return PeriodicRunner(runtime, fakeredis.FakeRedis(server=server), [repair])


def ran_an_hour_ago(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    redis = fakeredis.FakeRedis(server=server)
    redis.set("periodic:periodic:repair", "then", ex=5 * HOUR)
    return redis


def test_a_job_runs_once_per_period_across_every_process() -> None:
    server, runtime, repair = fakeredis.FakeServer(), Runtime(), job(at_start=False)
    first, second = process(server, runtime, repair), process(server, runtime, repair)
    assert [first.run_if_due(repair), second.run_if_due(repair), first.run_if_due(repair)] == [True, False, False]
    assert runtime.runs == 1


def test_a_job_that_ran_within_its_period_waits_when_the_workers_restart() -> None:
    server, runtime, repair = fakeredis.FakeServer(), Runtime(), job(at_start=False)
    ran_an_hour_ago(server)
    assert process(server, runtime, repair).run_if_due(repair) is False
    assert runtime.runs == 0


def test_an_at_start_job_runs_when_the_workers_start_and_its_period_counts_from_then() -> None:
    server, runtime, repair = fakeredis.FakeServer(), Runtime(), job(at_start=True)
    redis = ran_an_hour_ago(server)
    runner = process(server, runtime, repair)
    assert runner.run_if_due(repair) is True
    assert runner.run_if_due(repair) is False  # started once; now every period
    assert runtime.runs == 1
    assert redis.ttl("periodic:periodic:repair") > 6 * HOUR - 60


def test_processes_starting_together_run_an_at_start_job_once() -> None:
    server, runtime, repair = fakeredis.FakeServer(), Runtime(), job(at_start=True)
    ran_an_hour_ago(server)
    starting = [process(server, runtime, repair) for _ in range(3)]
    assert [runner.run_if_due(repair) for runner in starting] == [True, False, False]
    assert runtime.runs == 1
    redis = fakeredis.FakeRedis(server=server)
    assert 0 < redis.ttl("periodic:periodic:repair:start") <= START_WINDOW_SECONDS


def test_a_job_whose_interval_is_zero_never_runs_not_even_at_start() -> None:
    server, runtime, repair = fakeredis.FakeServer(), Runtime(), job(at_start=True, every=0)
    assert process(server, runtime, repair).run_if_due(repair) is False
    assert runtime.runs == 0


def test_a_runner_sleeps_until_its_job_is_next_due_and_for_good_when_it_is_off() -> None:
    server, runtime = fakeredis.FakeServer(), Runtime()
    repair = job(at_start=False, every=HOUR)
    runner = process(server, runtime, repair)
    assert runner.until_due(repair) == runner.tick  # never ran: look again shortly
    assert runner.run_if_due(repair) is True
    assert HOUR - 60 < (runner.until_due(repair) or 0) <= HOUR  # claimed for the hour: no look before it ends
    off = job(at_start=True, every=0)
    assert process(server, runtime, off).until_due(off) is None
