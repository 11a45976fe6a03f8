"""`synctrack ledger rebuild`: fold every stored webhook into a fresh ledger, compare it (`--verify`), replace
the live one (`--apply`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from schemas.settings import Settings
from service.cli.progress import console

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(name="ledger", help="The ledger: rebuild it from stored events, compare.", no_args_is_help=True)


@app.command("rebuild")
def rebuild(
    verify: bool = typer.Option(False, "--verify", help="Compare with the live ledger; print every difference."),
    apply: bool = typer.Option(False, "--apply", help="Replace the live ledger with the rebuilt one."),
    into: str | None = typer.Option(None, help="Database URL for the rebuilt ledger (default: a fresh schema)."),
    mode: str = typer.Option("memory", help="memory (fast) or store (the workers' SQL path, slower)."),
    order: str = typer.Option("received", help="received, generated or shuffled: the fold does not care."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before --apply."),
) -> None:
    """Rebuild the ledger from the stored raw events into a fresh schema."""
    from workers.ops.rebuild import apply_rebuilt, fresh_target, rebuild_ledger
    from workers.runtime.db import make_engine

    if mode not in ("memory", "store") or order not in ("received", "generated", "shuffled"):
        raise typer.BadParameter("--mode is memory or store; --order is received, generated or shuffled")
    settings = Settings()
    live = make_engine(settings.database_url)
    target, where = fresh_target(settings.database_url, into)
    with console.status("folding stored events…"):
        report = rebuild_ledger(live, target, mode=mode, order=order)  # type: ignore[arg-type]
    typer.echo(
        f"rebuilt from {report.events} stored events into {where} in {report.seconds:.1f} s "
        f"({report.events_per_second:,.0f} events/s): folded {report.folded}, ignored {report.ignored}, "
        f"failed {report.failed}, without body {report.pruned}"
    )
    failed = _verify(live, target) if verify else False
    if apply:
        if not yes:
            typer.confirm("Replace the live ledger with the rebuilt one?", abort=True)
        refolded = apply_rebuilt(live, target, report.started_at)
        typer.echo(f"live ledger replaced; {refolded} events processed meanwhile folded again")
    if failed:
        raise typer.Exit(1)


def _verify(live: Engine, target: Engine) -> bool:
    """Print every difference; True if any is not explained by a fact without a raw event."""
    from workers.ops.rebuild import diff_dumps, dump_ledger, replayable_ids

    differences = diff_dumps(dump_ledger(live), dump_ledger(target), replayable_ids(live))
    for difference in differences:
        typer.echo(str(difference))
    explained = sum(1 for d in differences if d.note)
    typer.echo(f"{len(differences)} differences ({explained} explained by facts without a raw event)")
    return explained < len(differences)
