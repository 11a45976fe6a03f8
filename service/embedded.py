"""The embedded default: web and worker in one process, SQLite, an in-process Redis.

Durability: the in-process Redis lives in memory, so events acknowledged but not yet folded are lost
if the process dies (once folded, they are in SQLite). Production runs against a real Redis.
"""

from __future__ import annotations

import dramatiq

from schemas.settings import Settings
from workers.main import build_worker, start_periodic
from workers.run import IDLE_POLL_MS
from workers.runtime.db import upgrade


def start_embedded_worker(settings: Settings, threads: int = 2) -> dramatiq.Worker:
    """Migrate the database, then start dramatiq worker threads in this process."""
    upgrade(settings.database_url)
    broker, runtime = build_worker(settings, check_schema=False)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
    start_periodic(runtime)
    return worker
