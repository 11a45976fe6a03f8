"""Nothing acknowledged is lost, whatever fails: 20,000 signed deliveries into two `synctrack web` processes
while workers are SIGKILLed mid-batch and restarted, Redis crashes and restarts, PostgreSQL drops every
connection, and a web process is stopped mid-load (and must answer what it holds); and a backlog of old webhooks
on the backfill queue drains while workers are SIGKILLed in the middle of backfill messages.

Counts are printed at the end (`pytest -m chaos -s` shows them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.builders import SECRET
from tests.support.chaos_support import Ledger, RedisServer, Web, send_like_codat
from tests.support.services import ServiceProcess, free_port, run_cli, wait_for, wait_until_healthy
from tests.support.workload import webhook_mix
from workers.runtime.broker import FOLD_BACKFILL_ACTOR, FOLD_BATCH_ACTOR
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE, unacknowledged, unfinished

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]

SENT = 20_000
DUPLICATE_SHARE = 0.10
REDIS_DOWN_SECONDS = 1.5
GRACE_AFTER_REDIS_SECONDS = 3.0
NAMESPACE = "chaos"
LANES = (WEBHOOK_QUEUE, BACKFILL_QUEUE)


class Cluster:
    """Two web processes and two worker processes on one Redis and one PostgreSQL database."""

    def __init__(self, tmp_path: Path, env: dict[str, str], stack: ExitStack) -> None:
        self.tmp_path, self.env, self.stack = tmp_path, env, stack
        self.webs: list[Web] = []
        self.web_procs: dict[str, ServiceProcess] = {}
        self.workers: list[ServiceProcess] = []
        self.killed_in_hand: list[tuple[int, int]] = []
        """(messages, events) the workers held unacknowledged at each SIGKILL."""
        self.generation = 0

    def _name(self, role: str) -> str:
        self.generation += 1
        return f"{role}-{self.generation}"

    def start_web(self, port: int) -> Web:
        args = ["web", "--host", "127.0.0.1", "--port", str(port)]
        proc = ServiceProcess(args, self.env, self.tmp_path, self._name("web"))
        self.stack.callback(proc.stop)
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, proc)
        self.web_procs[base] = proc
        return Web(base)

    def start_worker(self, slot: int | None = None) -> None:
        args = ["worker", "--processes", "1", "--threads", "16"]
        proc = ServiceProcess(args, self.env, self.tmp_path, self._name("worker"))
        self.stack.callback(proc.stop)
        if slot is None:
            self.workers.append(proc)
        else:
            self.workers[slot] = proc

    def kill_worker(self, slot: int, queues: tuple[str, ...] = LANES) -> str:
        """SIGKILL the worker's whole process group (dramatiq's parent and its worker child) mid-batch."""
        # Aim for the middle of a multi-event message: wait (briefly) until the workers hold one.
        deadline = time.monotonic() + 3
        messages, events = in_hand(self.env["SYNCTRACK_REDIS_URL"], queues)
        while events <= messages and time.monotonic() < deadline:
            time.sleep(0.002)
            messages, events = in_hand(self.env["SYNCTRACK_REDIS_URL"], queues)
        self.workers[slot].stop(signal.SIGKILL)
        self.start_worker(slot)
        self.killed_in_hand.append((messages, events))
        return f"{messages} messages ({events} events) in the workers' hands"

    def drain_web(self, index: int) -> None:
        """SIGTERM a web process under load, wait for it to exit, start it again on the same port."""
        web = self.webs[index]
        web.accepting = False
        proc = self.web_procs[web.base]
        os.kill(proc.proc.pid, signal.SIGTERM)
        proc.proc.wait(30)
        port = int(web.base.rsplit(":", 1)[1])
        self.webs[index] = self.start_web(port)


def in_hand(redis_url: str, queues: tuple[str, ...] = LANES) -> tuple[int, int]:
    """(messages, events) of `queues` fetched by workers and not yet acknowledged: what a SIGKILL now interrupts."""
    client = redis.Redis.from_url(redis_url)
    messages = [m for queue in queues for m in unacknowledged(client, NAMESPACE, queue)]
    batches = (FOLD_BATCH_ACTOR, FOLD_BACKFILL_ACTOR)
    events = sum(len(m.args[0]) if m.actor_name in batches else 1 for m in messages)
    return len(messages), events


def terminate_backends(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


class Chaos(threading.Thread):
    """Runs each fault when the sender has had that share of the deliveries acknowledged."""

    def __init__(self, record: Ledger, total: int, steps: list[tuple[float, str, Callable[[], object]]]) -> None:
        super().__init__(daemon=True)
        self.record, self.total, self.steps = record, total, steps
        self.log: list[str] = []
        self.error: BaseException | None = None
        self.redis_window = (0.0, 0.0)

    def run(self) -> None:
        try:
            for share, name, action in self.steps:
                while self.record.acknowledged < share * self.total:
                    time.sleep(0.02)
                started = time.monotonic()
                result = action()
                self.log.append(f"{name} at {self.record.acknowledged} acknowledged ({result or 'done'})")
                if name == "redis crash":
                    self.redis_window = (started, time.monotonic() + GRACE_AFTER_REDIS_SECONDS)
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def chaos_env(tmp_path: Path, postgres_url: str) -> Iterator[tuple[dict[str, str], RedisServer, str]]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the run needs a Redis of its own to crash and restart")
    server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    env = {
        "SYNCTRACK_REDIS_URL": server.url,
        "SYNCTRACK_REDIS_NAMESPACE": NAMESPACE,
        "SYNCTRACK_DATABASE_URL": postgres_url,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_WORKER_HEARTBEAT_TIMEOUT_MS": "1500",
        "SYNCTRACK_WORKER_MIN_BACKOFF_MS": "100",
        "SYNCTRACK_WORKER_MAX_BACKOFF_MS": "1000",
        "SYNCTRACK_LOG_LEVEL": "WARNING",
    }
    try:
        yield env, server, postgres_url
    finally:
        server.stop()


def restart_redis(server: RedisServer) -> str:
    server.crash()
    time.sleep(REDIS_DOWN_SECONDS)
    server.start()
    return f"down {REDIS_DOWN_SECONDS}s"


def queue_state(client: redis.Redis) -> dict[str, int]:
    """What the webhook lanes, live and backfill together, still hold."""
    lanes = [dataclasses.asdict(unfinished(client, NAMESPACE, queue)) for queue in LANES]
    return {name: sum(lane[name] for lane in lanes) for name in lanes[0]}


def stored_events(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT id, outcome FROM webhook_events").fetchall())


@pytest.mark.timeout(900)
def test_no_acknowledged_webhook_is_lost_through_crashes_restarts_and_drains(
    tmp_path: Path, chaos_env: tuple[dict[str, str], RedisServer, str]
) -> None:
    env, server, database_url = chaos_env
    upgraded = run_cli(["db", "upgrade"], env, tmp_path, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr
    unique = round(SENT / (1 + DUPLICATE_SHARE))
    deliveries = webhook_mix(unique, duplicate_share=DUPLICATE_SHARE, companies=40, hot_companies=3, seed=8)
    record = Ledger()

    with ExitStack() as stack:
        cluster = Cluster(tmp_path, env, stack)
        cluster.webs = [cluster.start_web(free_port()), cluster.start_web(free_port())]
        cluster.start_worker()
        cluster.start_worker()
        chaos = Chaos(
            record,
            len(deliveries),
            [
                (0.08, "worker 0 SIGKILL", lambda: cluster.kill_worker(0)),
                (0.18, "postgres pg_terminate_backend", lambda: f"{terminate_backends(database_url)} backends"),
                (0.28, "worker 1 SIGKILL", lambda: cluster.kill_worker(1)),
                (0.40, "redis crash", lambda: restart_redis(server)),
                (0.55, "web 0 SIGTERM", lambda: cluster.drain_web(0)),
                (0.68, "worker 0 SIGKILL", lambda: cluster.kill_worker(0)),
                (0.82, "worker 1 SIGKILL", lambda: cluster.kill_worker(1)),
            ],
        )
        chaos.start()
        started = time.monotonic()
        asyncio.run(send_like_codat(deliveries, cluster.webs, record))
        sent_seconds = time.monotonic() - started
        chaos.join(60)
        assert chaos.error is None, f"a fault could not be injected: {chaos.error!r}"
        assert not chaos.is_alive(), f"faults not all injected: {chaos.log}"

        client = redis.Redis.from_url(server.url)
        acknowledged_ids = record.ids_with(202) | record.ids_with(200)
        drained = True
        trace: list[str] = []

        def settled() -> bool:
            for worker in cluster.workers:
                assert worker.proc.poll() is None, f"a worker exited by itself:\n{worker.output()[-3000:]}"
            stored_now, queues_now = len(stored_events(database_url)), queue_state(client)
            if len(trace) < int(time.monotonic() - started - sent_seconds) // 10 + 1:
                trace.append(f"+{len(trace) * 10}s stored={stored_now} unacked={queues_now['messages']}")
            empty = {"queued": 0, "messages": 0, "delayed": 0, "dead": 0}
            return stored_now >= len(acknowledged_ids) and queues_now == empty

        try:
            wait_for(settled, timeout=240, interval=1, message="every acknowledged event stored and the queue empty")
        except TimeoutError:
            drained = False
        drain_seconds = time.monotonic() - started - sent_seconds
        queues = queue_state(client)
        stored = stored_events(database_url)
        rebuild = run_cli(["ledger", "rebuild", "--verify"], env, tmp_path, timeout=300)

    statuses = record.statuses()
    accepted = record.ids_with(202)
    unanswered = [a for a in record.attempts if a.status is None and not a.refused]
    lost = acknowledged_ids - set(stored)
    stored_unacknowledged = set(stored) - accepted
    print(
        f"\nchaos: sent={len(deliveries)} unique={len({d.message_id for d in deliveries})} "
        f"acknowledged={record.acknowledged} accepted(202)={len(accepted)} duplicates(200)={statuses[200]} "
        f"stored={len(stored)} lost={len(lost)} 503={statuses[503]} refused={sum(a.refused for a in record.attempts)} "
        f"unanswered={len(unanswered)} send_seconds={sent_seconds:.1f} drain_seconds={drain_seconds:.1f} "
        f"queues={queues}\n  faults: "
        + "; ".join(chaos.log)
        + f"\n  drain: {', '.join(trace)}"
        + f"\n  unanswered: {Counter(a.error.split('(')[0] for a in unanswered)}"
        + f"\n  rebuild: {' | '.join(rebuild.stdout.strip().splitlines()[-2:])}"
    )
    # The kills interrupted workers in the middle of messages that carry several events each.
    assert any(events > messages for messages, events in cluster.killed_in_hand), cluster.killed_in_hand
    assert drained, f"not drained within 240 s: {queues}, stored {len(stored)} of {len(acknowledged_ids)}"

    assert record.acknowledged == len(deliveries), "some deliveries were never acknowledged"
    assert not lost, f"{len(lost)} acknowledged events are not stored, e.g. {sorted(lost)[:5]}"
    assert sum(statuses[s] for s in (200, 202)) == len(deliveries)
    assert statuses[202] == len(accepted), "a message id was accepted (202) twice: de-duplication failed"
    # Stored but never answered 202: only if Redis took the event and died before the answer left
    # (the web then answers 503, Codat retries and gets 200 "duplicate").
    low, high = chaos.redis_window
    during_outage = {a.message_id for a in record.attempts if a.status == 503 and low <= a.at <= high}
    assert stored_unacknowledged <= during_outage, sorted(stored_unacknowledged - during_outage)[:5]
    assert set(stored) <= {d.message_id for d in deliveries}
    assert set(stored.values()) <= {"processed", "ignored"}, f"outcomes: {set(stored.values())}"

    for attempt in record.attempts:
        if attempt.status is not None and attempt.status >= 500:
            assert attempt.status == 503 and attempt.retry_after, attempt
            assert attempt.code == "queue_unavailable", attempt
            assert low <= attempt.at <= high, f"a 5xx outside the Redis outage: {attempt}"
    assert set(statuses) <= {200, 202, 503, None}, statuses
    # A request the stopping web process did not answer must not have been taken either (its retry got 202).
    assert {a.message_id for a in unanswered} <= accepted, "a web process took a request and dropped the answer"

    assert rebuild.returncode == 0, f"ledger rebuild --verify failed:\n{rebuild.stdout}\n{rebuild.stderr}"


BACKLOG = 3_000


@pytest.mark.timeout(600)
def test_no_acknowledged_webhook_is_lost_when_workers_die_mid_backfill(
    tmp_path: Path, chaos_env: tuple[dict[str, str], RedisServer, str]
) -> None:
    env, server, database_url = chaos_env
    upgraded = run_cli(["db", "upgrade"], env, tmp_path, timeout=300)
    assert upgraded.returncode == 0, upgraded.stderr
    # Codat generated these over a week (`webhook_mix`): all but the legacy alerts, which carry no generation
    # time, are older than the live window and wait on the backfill queue.
    deliveries = webhook_mix(BACKLOG, companies=40, hot_companies=3, seed=11)
    record = Ledger()
    client = redis.Redis.from_url(server.url)

    with ExitStack() as stack:
        cluster = Cluster(tmp_path, env, stack)
        cluster.webs = [cluster.start_web(free_port())]
        asyncio.run(send_like_codat(deliveries, cluster.webs, record))
        assert record.acknowledged == len(deliveries)
        backlog = unfinished(client, NAMESPACE, BACKFILL_QUEUE).queued
        assert backlog > 0, "nothing waits on the backfill queue"

        cluster.start_worker()
        cluster.start_worker()
        kills = []
        for slot in (0, 1, 0):
            wait_for(lambda: in_hand(server.url, (BACKFILL_QUEUE,))[0], timeout=60, interval=0.01, message="backfill")
            kills.append(cluster.kill_worker(slot, (BACKFILL_QUEUE,)))

        def settled() -> bool:
            return len(stored_events(database_url)) >= len(deliveries) and queue_state(client) == {
                "queued": 0,
                "messages": 0,
                "delayed": 0,
                "dead": 0,
            }

        wait_for(settled, timeout=300, interval=1, message="every acknowledged event stored and both lanes empty")
        rebuild = run_cli(["ledger", "rebuild", "--verify"], env, tmp_path, timeout=300)

    print(f"\nbackfill chaos: backlog={backlog} messages kills: " + "; ".join(kills))
    assert any(events > messages for messages, events in cluster.killed_in_hand), cluster.killed_in_hand
    stored = stored_events(database_url)
    assert set(stored) == {d.message_id for d in deliveries}
    assert set(stored.values()) <= {"processed", "ignored"}, f"outcomes: {set(stored.values())}"
    assert rebuild.returncode == 0, f"ledger rebuild --verify failed:\n{rebuild.stdout}\n{rebuild.stderr}"
