"""`synctrack reconcile` and `synctrack fake-codat`: the commands around Codat's API."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from schemas.settings import Settings
from service.cli.progress import change_feed, open_ledger
from workers.runtime.logs import configure_logging

app = typer.Typer()


@app.command("reconcile")
def reconcile(
    company: Annotated[
        list[str] | None,
        typer.Option("--company", help="Company id to reconcile (repeatable). Default: every company in the ledger."),
    ] = None,
) -> None:
    """Read Codat's connections, pull-operation history and data status; fold what the ledger missed."""
    from workers.codat.reconcile import reconcile as run

    settings, engine = open_ledger("reconcile")
    reports = asyncio.run(run(settings, engine, change_feed(settings), list(company or [])))
    for report in reports:
        typer.echo(report.line())
    if not reports:
        typer.echo("no company to reconcile: the ledger is empty; name one with --company")
    raise typer.Exit(1 if any(report.error for report in reports) else 0)


@app.command("fake-codat")
def fake_codat(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8100, help="Port to listen on."),
    receiver_url: str = typer.Option(
        "http://127.0.0.1:8000/webhooks/codat", help="Where to send webhooks (Synctrack's receiver)."
    ),
    secret: str = typer.Option(
        "", help="Webhook signing secret (whsec_…). Default: the first of SYNCTRACK_WEBHOOK_SECRETS."
    ),
    api_key: str = typer.Option("", help="Require this key (Authorization: Basic <key>). Default: accept any."),
    sync_seconds: float = typer.Option(2.0, help="How long a queued data type takes to finish."),
    failure_rate: float = typer.Option(0.0, help="Share of syncs (0..1) that end in an error status."),
    companies: int = typer.Option(0, help="Synthetic companies to create at start."),
    traffic_every: float = typer.Option(0.0, help="Seconds between random refreshes (0 = no background traffic)."),
) -> None:
    """A fake Codat API for local runs and tests: synthetic companies, signed webhooks, a control API."""
    from fakecodat.server import serve
    from fakecodat.world import Config

    settings = Settings()
    configure_logging(settings)
    secret = secret or (settings.webhook_secrets[0] if settings.webhook_secrets else "")
    if not secret.startswith("whsec_"):
        raise typer.BadParameter("give --secret whsec_… or set SYNCTRACK_WEBHOOK_SECRETS", param_hint="--secret")
    config = Config(
        sync_seconds=sync_seconds,
        failure_rate=failure_rate,
        api_key=api_key or None,
        traffic_every_seconds=traffic_every,
    )
    typer.echo(f"fake Codat on http://{host}:{port}  (control API: http://{host}:{port}/_control/...)")
    typer.echo(f"  webhooks to {receiver_url}")
    typer.echo(f"  point Synctrack at it: SYNCTRACK_CODAT_BASE_URL=http://{host}:{port}")
    serve(host, port, receiver_url=receiver_url, secret=secret, config=config, companies=companies)
