"""The `synctrack` command: one Typer app made of one module per command group (a module whose Typer has a
`name` is a group). Commands import what they run inside their body: `synctrack web --workers N` imports this
module again in every web process, which should not pay for the rest."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from service.cli import codat, db, deadletters, demo, imports, ledger, replay, retention, run, tokens

app = typer.Typer(help="Synctrack: Codat connections and their syncs, tracked.", no_args_is_help=True)
for part in (run, codat, imports, demo, replay, retention, db, tokens, ledger, deadletters):
    app.add_typer(part.app)


def main() -> None:
    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A setting that cannot be read stops every command at start, naming the variable and why.
        for error in exc.errors():
            name = "SYNCTRACK_" + "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"synctrack: {name}: {error['msg']}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
