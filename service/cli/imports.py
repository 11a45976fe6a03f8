"""`synctrack import`: bring an existing Codat account into the ledger in this process (the admin API runs the
same job on the workers). Ctrl-C leaves a job that `--resume ID` continues, retrying the companies that failed."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated

import typer

from schemas.imports import DEFAULT_CONCURRENCY
from service.cli.progress import change_feed, console, open_ledger, progress_bar

if TYPE_CHECKING:
    from schemas.imports import ImportJobOut
    from workers.ledger.tables import ImportJob

app = typer.Typer()


@app.command("import")
def import_account(
    company: Annotated[
        list[str] | None,
        typer.Option("--company", help="Import only this company id (repeatable). Default: every company Codat lists."),
    ] = None,
    lookback_hours: Annotated[
        float | None,
        typer.Option(help="How far back to read pull-operation history. Default: SYNCTRACK_RECONCILE_LOOKBACK_HOURS."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Companies read at once.")] = DEFAULT_CONCURRENCY,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an import job (retries failures).")] = None,
) -> None:
    """Import an existing Codat account: its companies, connections, recent syncs and data status."""
    from workers.codat.import_jobs import ImportBusy, ImportJobNotFound, create_job, job_out, load_job, release
    from workers.codat.importer import Importer

    settings, engine = open_ledger("import")
    logging.getLogger("synctrack.import").setLevel(logging.WARNING)  # the progress bar says the rest
    logging.getLogger("synctrack.codat").setLevel(logging.WARNING)
    if resume and company:
        raise typer.BadParameter(
            "--resume continues a job as it was created; leave --company out", param_hint="--resume"
        )
    try:
        job = load_job(engine, resume) if resume else None
    except ImportJobNotFound:
        console.print(f"no import job {resume}")
        raise typer.Exit(1) from None
    if job is None:
        job = create_job(engine, list(company or []), lookback_hours or settings.reconcile_lookback_hours)
    console.print(f"import {job.id}: {'the companies named' if job.company_ids else 'every company Codat lists'}")
    with progress_bar("companies", 1) as progress:
        task = progress.add_task("companies", total=job.total or None, completed=job.done + job.failed)

        def show(current: ImportJob) -> None:
            progress.update(task, total=current.total or None, completed=current.done + current.failed)

        importer = Importer(settings, engine, change_feed(settings), concurrency=concurrency, on_progress=show)
        try:
            job = asyncio.run(importer.run(job.id))
        except ImportBusy:
            progress.stop()
            console.print(f"import {job.id} is being run by someone else right now (the workers, or another shell)")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            progress.stop()
            release(engine, job.id, importer.owner)
            console.print(f"interrupted; resume with: synctrack import --resume {job.id}")
            raise typer.Exit(130) from None
    summary = job_out(engine, job)
    _print_summary(summary)
    raise typer.Exit(0 if summary.status == "completed" and summary.failed == 0 else 1)


def _print_summary(job: ImportJobOut) -> None:
    typer.echo(
        f"import {job.id} {job.status}: companies={job.total} imported={job.done} failed={job.failed} "
        f"connections={job.connections} syncs={job.syncs} folded={job.folded}"
    )
    if job.error:
        typer.echo(f"  error: {job.error}")
    for failure in job.errors:
        typer.echo(f"  company={failure.company_id} error={failure.error!r}")
    if job.failed:
        typer.echo(f"  retry the failures with: synctrack import --resume {job.id}")
