"""`synctrack worker`: N worker processes, each running dramatiq worker threads over Synctrack's actors.

The parent only supervises: it restarts a child that dies (its unacknowledged messages are requeued by the broker)
and on SIGTERM or SIGINT asks every child to finish the messages in hand and stop.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger("synctrack.worker")

RESTART_DELAY_SECONDS = 1.0
IDLE_POLL_MS = 1_000
"""dramatiq's `worker_timeout`: the longest an idle worker thread waits before it looks at its stop flag again."""
SHUTDOWN_GRACE_SECONDS = 30.0


def worker_process(threads: int) -> None:
    """One worker process: run dramatiq's worker over the actors until SIGTERM or until its supervisor is gone."""
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

    supervisor = multiprocessing.parent_process()
    assert supervisor is not None, "a worker process is started by `supervise`"

    def watch_parent() -> None:
        # A supervisor killed outright (SIGKILL, OOM) cannot stop its children: each stops when orphaned.
        multiprocessing.connection.wait([supervisor.sentinel])
        log.warning("worker=%d result=orphaned stopping=true", os.getpid())
        stopping.set()

    threading.Thread(target=watch_parent, name="synctrack-parent-watch", daemon=True).start()
    broker, runtime = build_worker(settings)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
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
    stopping = threading.Event()
    woken, wake = os.pipe()  # a signal writes to `wake`, so the wait on the children's sentinels returns

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        child = context.Process(target=worker_process, args=(threads,), name=f"synctrack-worker-{slot}")
        child.start()
        return child

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        os.write(wake, b"\0")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = [start(slot) for slot in range(processes)]
    while not stopping.is_set():
        multiprocessing.connection.wait([child.sentinel for child in children] + [woken])
        for slot, child in enumerate(children):
            if not child.is_alive() and not stopping.is_set():
                log.warning(
                    "worker=%s result=died exitcode=%s restarting_in=%.0fs",
                    child.pid,
                    child.exitcode,
                    RESTART_DELAY_SECONDS,
                )
                time.sleep(RESTART_DELAY_SECONDS)
                children[slot] = start(slot)
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join()
    return 0
