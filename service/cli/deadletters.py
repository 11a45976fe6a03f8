"""`synctrack dlq list|show|redrive|purge`: the dead letters, messages that exhausted their retries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas.settings import Settings

if TYPE_CHECKING:
    from workers.ops.deadletters import DeadLetters

app = typer.Typer(name="dlq", help="Dead letters: messages that exhausted their retries.", no_args_is_help=True)

IdsArgument = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids or event ids.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


def _letters(settings: Settings) -> DeadLetters:
    from workers.ops.deadletters import DeadLetters
    from workers.runtime.broker import sync_redis
    from workers.runtime.db import make_engine

    return DeadLetters(sync_redis(settings), settings.redis_namespace, engine=make_engine(settings.database_url))


def _selection(ids: list[str] | None, all_letters: bool) -> list[str] | None:
    if not ids and not all_letters:
        raise typer.BadParameter("give dead-letter ids (or event ids), or --all")
    return None if all_letters else list(ids or [])


@app.command("list")
def dlq_list(limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50) -> None:
    """The dead letters, newest first: event, type, company, attempts and the last error."""
    letters = _letters(Settings())
    total = letters.count()
    table = Table("id", "event id", "type", "company", "attempts", "last error", "dead at")
    for letter in letters.newest(limit):
        table.add_row(
            letter.id,
            letter.event_id or "-",
            letter.event_type or "-",
            letter.company_id or "-",
            str(letter.attempts),
            (letter.last_error or "-")[:80],
            letter.dead_at.isoformat(timespec="seconds"),
        )
    if total:
        Console(width=200).print(table)
    typer.echo(f"{total} dead letters")


@app.command("show")
def dlq_show(ident: Annotated[str, typer.Argument(help="A dead-letter id or an event id.")]) -> None:
    """Everything about one dead letter, with the traceback of its last attempt."""
    letter = _letters(Settings()).get(ident)
    if letter is None:
        typer.echo(f"no dead letter with id or event id {ident}")
        raise typer.Exit(1)
    for key, value in letter.summary().items():
        typer.echo(f"{key}: {value}")
    typer.echo("traceback:")
    typer.echo(letter.traceback or "-")


@app.command("redrive")
def dlq_redrive(ids: IdsArgument = None, all_letters: AllOption = False) -> None:
    """Put dead letters back on their queue with fresh retries (after the cause is fixed)."""
    from workers.runtime.metrics import record_redriven

    moved = _letters(Settings()).redrive(_selection(ids, all_letters))
    record_redriven(len(moved))
    for letter in moved:
        typer.echo(f"redriven {letter.id} event={letter.event_id}")
    typer.echo(f"{len(moved)} dead letters redriven")


@app.command("purge")
def dlq_purge(
    ids: IdsArgument = None,
    all_letters: AllOption = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete dead letters for good (their stored events stay, and can still be replayed)."""
    selection = _selection(ids, all_letters)
    if not yes:
        typer.confirm(
            f"Delete {'every dead letter' if selection is None else f'{len(selection)} dead letters'}?", abort=True
        )
    typer.echo(f"{_letters(Settings()).purge(selection)} dead letters purged")
