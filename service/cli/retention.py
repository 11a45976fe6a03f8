"""`synctrack prune`: remove raw webhook bodies past their retention at once (the workers do it hourly)."""

from __future__ import annotations

from typing import Annotated

import typer

from schemas.settings import Settings

app = typer.Typer()


@app.command("prune")
def prune(
    days: Annotated[int | None, typer.Option(help="Keep bodies this many days (default: the setting).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
) -> None:
    """Remove raw webhook bodies older than SYNCTRACK_RAW_EVENT_RETENTION_DAYS, keeping each row as a tombstone."""
    from workers.jobs.retention import count_prunable, cutoff_for, prune_raw_events
    from workers.runtime.db import make_engine

    settings = Settings()
    keep = settings.raw_event_retention_days if days is None else days
    if keep <= 0:
        typer.echo("retention is off (0 days): nothing pruned")
        return
    engine = make_engine(settings.database_url)
    cutoff = cutoff_for(keep)
    if dry_run:
        typer.echo(f"{count_prunable(engine, cutoff)} raw events received before {cutoff.isoformat()} would be pruned")
        return
    pruned = prune_raw_events(engine, cutoff)
    typer.echo(f"{pruned} raw events received before {cutoff.isoformat()} pruned (rows kept as tombstones)")
