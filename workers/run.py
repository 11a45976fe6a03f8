"""What `dramatiq workers.run` imports (`synctrack worker` runs that): a worker process built from
the environment, refusing to start on an out-of-date schema."""

from __future__ import annotations

from schemas.settings import Settings
from workers.main import build_worker, start_periodic
from workers.runtime.logs import configure_logging

settings = Settings()
configure_logging(settings)
broker, runtime = build_worker(settings)
periodic = start_periodic(runtime)
