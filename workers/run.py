"""`synctrack worker`: N worker processes, each running dramatiq worker threads over Synctrack's actors.

The command builds its dramatiq workers itself (rather than through dramatiq's CLI) so it can set how long an idle
consumer sleeps between polls (`SYNCTRACK_WORKER_POLL_MS`): dramatiq's CLI leaves it at a second, which is what a
dashboard's "syncing…" indicator would wait for under light load.

The parent process only supervises: it starts the children, restarts one that dies (a worker killed mid-message
loses nothing: its unacknowledged messages are requeued by the broker's maintenance and folding is idempotent), and
on SIGTERM or SIGINT asks every child to finish the messages in hand and stop. Nothing starts at import.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from workers.runtime.queues import OPS_QUEUE, WEBHOOK_QUEUE

log = logging.getLogger("synctrack.worker")

RESTART_DELAY_SECONDS = 1.0
IDLE_POLL_MS = 1_000
"""How long an idle consumer of the other queues (delay queues, `deliveries`) sleeps between polls:
dramatiq's default. Each poll costs CPU; only the webhooks queue is worth polling often for its own sake."""
OPS_POLL_MS = 100
"""The same for the `ops` queue (imports, replays). What a killed worker held is requeued by the broker's
maintenance, which runs on a share of each queue's own polls (`MAINTENANCE_CHANCE`, 2 %): at one poll a
second an interrupted import waited 50 s on average to be taken up again, and now and then minutes; at ten a
second, about 5 s. Deliveries need no such help: their sweep re-queues any whose lease ran out."""
SHUTDOWN_GRACE_SECONDS = 30.0


def poll_quickly(worker: Any, queues: list[str], poll_ms: int) -> None:
    """Make the consumers of `queues` sleep at most `poll_ms` between polls when idle.

    dramatiq gives every consumer of a worker the one `worker_timeout`; ten consumers polling every few
    milliseconds would spend a good share of a core doing nothing. The consumer thread reads its
    `worker_timeout` whenever it (re)creates its consumer, and the Redis consumer reads its `timeout` on every
    idle poll, so setting both after start applies at once and survives a reconnect."""
    deadline = time.monotonic() + 10
    for name in queues:
        thread = worker.consumers.get(name)
        if thread is None:
            continue
        thread.worker_timeout = poll_ms
        while getattr(thread, "consumer", None) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if getattr(thread, "consumer", None) is not None:
            thread.consumer.timeout = poll_ms


def worker_process(threads: int, parent: int) -> None:
    """One worker process: build the broker and actors, run dramatiq's worker until SIGTERM (or until its
    supervisor, process `parent`, is gone)."""
    import dramatiq

    from schemas.settings import Settings
    from workers.main import build_worker, start_periodic
    from workers.runtime.logs import configure_logging

    settings = Settings()
    configure_logging(settings)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns Ctrl-C into SIGTERM for each child

    def watch_parent() -> None:
        # A supervisor killed outright (SIGKILL, OOM) cannot stop its children: each stops when orphaned.
        while not stopping.wait(1.0):
            if os.getppid() != parent:
                log.warning("worker=%d result=orphaned stopping=true", os.getpid())
                stopping.set()

    threading.Thread(target=watch_parent, name="synctrack-parent-watch", daemon=True).start()
    broker, runtime = build_worker(settings)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
    poll_quickly(worker, [WEBHOOK_QUEUE], settings.worker_poll_ms)
    poll_quickly(worker, [OPS_QUEUE], max(settings.worker_poll_ms, OPS_POLL_MS))
    start_periodic(runtime)
    log.info("worker=%d result=ready threads=%d poll_ms=%d", os.getpid(), threads, settings.worker_poll_ms)
    stopping.wait()
    log.info("worker=%d result=stopping", os.getpid())
    worker.stop(timeout=int(SHUTDOWN_GRACE_SECONDS * 1000))
    runtime.close()
    broker.close()


def supervise(processes: int, threads: int) -> int:
    """Run `processes` worker processes until SIGTERM/SIGINT; return the exit status."""
    context = multiprocessing.get_context("spawn")
    children: list[multiprocessing.process.BaseProcess] = []
    stopping = threading.Event()

    def start(slot: int) -> None:
        child = context.Process(target=worker_process, args=(threads, os.getpid()), name=f"synctrack-worker-{slot}")
        child.start()
        if slot < len(children):
            children[slot] = child
        else:
            children.append(child)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(processes):
        start(slot)
    while not stopping.wait(0.5):
        for slot, child in enumerate(children):
            if not child.is_alive() and not stopping.is_set():
                log.warning("worker=%s result=died exitcode=%s restarting_in=%.0fs", child.pid, child.exitcode, 1)
                time.sleep(RESTART_DELAY_SECONDS)
                start(slot)
    for child in children:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()
    return 0
