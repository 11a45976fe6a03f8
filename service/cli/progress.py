"""What the commands share (not a command group): one stderr console, so stdout stays free for what a script
reads, one kind of progress bar, the ledger they work on, and the change feed they announce folded changes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from schemas.settings import Settings
from workers.runtime.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from workers.ledger.changes import ChangeFeed

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``1,204 events/s``, with `decimals` after the point."""

    def __init__(self, unit: str, decimals: int = 0) -> None:
        super().__init__()
        self.unit = unit
        self.decimals = decimals

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = f"{speed:,.{self.decimals}f}" if speed else "-"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str, decimals: int = 0) -> Progress:
    """A bar with the count done of the total, the rate in `unit` per second, the ETA and the time taken."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit, decimals),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def open_ledger(command: str) -> tuple[Settings, Engine]:
    """The settings (logging configured) and the ledger; `synctrack {command}` exits 1, saying what to do, when
    the ledger's schema is not the one this code needs."""
    from workers.runtime.db import SchemaOutOfDate, make_engine, require_current_schema

    settings = Settings()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    try:
        require_current_schema(engine)
    except SchemaOutOfDate as exc:
        engine.dispose()
        typer.echo(f"synctrack {command}: {exc}", err=True)
        raise typer.Exit(1) from None
    return settings, engine


def change_feed(settings: Settings) -> ChangeFeed | None:
    """The change feed, or None (with a note) when Redis is not reachable."""
    from workers.ledger.changes import ChangeFeed
    from workers.runtime.broker import sync_redis

    redis = sync_redis(settings)
    try:
        redis.ping()
    except Exception:  # e.g. next to `synctrack dev`, whose change feed lives inside its own process
        console.print("note: Redis is not reachable, so changes are folded but not announced on the stream")
        return None
    return ChangeFeed(redis, settings.redis_namespace, settings.stream_max_changes)
