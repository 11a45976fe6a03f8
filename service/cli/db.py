"""`synctrack db upgrade|current`: the ledger database's schema."""

from __future__ import annotations

from pathlib import Path

import typer

from schemas.settings import Settings

app = typer.Typer(name="db", help="The ledger database.", no_args_is_help=True)


def database_location(url: str) -> str:
    """Where the database is, for people: the SQLite file's full path, or the server part of a URL (no password)."""
    if url.startswith("sqlite:///"):
        return str(Path(url.removeprefix("sqlite:///")).resolve())
    return url.split("@")[-1]


@app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Create or migrate the ledger schema."""
    from workers.runtime.db import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database {database_location(settings.database_url)} is at {revision}")


@app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the one this code needs."""
    from workers.runtime.db import current_revision, head_revision, make_engine

    engine = make_engine(Settings().database_url)
    typer.echo(f"database: {current_revision(engine)}  code: {head_revision()}")
