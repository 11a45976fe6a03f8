"""The ASGI application for `synctrack web` (uvicorn imports `service.asgi:app` in each process)."""

from __future__ import annotations

from schemas.settings import Settings
from service.app import create_app
from workers.runtime.logs import configure_logging

settings = Settings()
configure_logging(settings)
app = create_app(settings)
