"""The ASGI application for `synctrack web`: uvicorn imports `service.asgi:app` in each web process.

The app is built from the environment when `app` is first asked for, so importing this module opens nothing.
"""

from __future__ import annotations

from functools import cache

from starlette.applications import Starlette

from schemas.settings import Settings
from service.app import create_app
from workers.runtime.logs import configure_logging


@cache
def build() -> Starlette:
    """The web process's app, from the environment's settings, with logging configured."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings)


def __getattr__(name: str) -> Starlette:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return build()
