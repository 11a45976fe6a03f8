"""`synctrack dev`, `synctrack web` and `synctrack worker`: run Synctrack, in one process or at scale."""

from __future__ import annotations

import typer
import uvicorn

from schemas.settings import Settings
from service.cli.db import database_location
from service.cli.progress import open_ledger
from service.security import auth_mode
from workers.runtime.logs import configure_logging
from workers.runtime.metrics import prepare_multiprocess_dir

app = typer.Typer()


@app.command("dev")
def dev(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    threads: int = typer.Option(8, help="In-process worker threads (they wait on one folding thread)."),
) -> None:
    """Everything in one process: web, worker, SQLite, in-process Redis. Nothing else to install."""
    from service.app import create_app
    from service.embedded import start_embedded_worker

    settings, auth_lines = auth_mode.for_cli(Settings(embedded=True), host, dev=True)
    configure_logging(settings)
    prepare_multiprocess_dir(settings.redis_namespace)
    worker = start_embedded_worker(settings, threads)
    typer.echo(f"Synctrack (dev) on http://{host}:{port}")
    typer.echo(f"  database: {database_location(settings.database_url)}")
    typer.echo("  queue:    in-process (events not yet folded are lost if this process stops)")
    typer.echo(f"  webhooks: POST http://{host}:{port}/webhooks/codat")
    if not settings.webhook_secrets:
        typer.echo("  warning:  SYNCTRACK_WEBHOOK_SECRETS is empty, so every webhook will be rejected")
    typer.echo("\n".join(auth_lines))
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            timeout_graceful_shutdown=10,
            ws="none",
        )
    finally:
        worker.stop()


@app.command("web")
def web(
    host: str = typer.Option("0.0.0.0", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Web processes."),
) -> None:
    """The web processes (receiver, API, stream) against SYNCTRACK_REDIS_URL and SYNCTRACK_DATABASE_URL."""
    settings = Settings()
    configure_logging(settings)
    typer.echo("\n".join(auth_mode.for_cli(settings, host, dev=False)[1]), err=True)
    prepare_multiprocess_dir(settings.redis_namespace)
    uvicorn.run(
        "service.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=20,
        # A child imports the whole app before it answers its first health check; on a busy host that
        # takes longer than uvicorn's default 5 s, and the child would be killed and restarted in a loop.
        timeout_worker_healthcheck=30,
        proxy_headers=False,
        # Named, not left to "auto": without uvloop the receiver runs at half speed (bench/RESULTS.md).
        loop="uvloop",
        # No route speaks WebSocket: an upgrade request is answered as plain HTTP, and no WebSocket library is loaded.
        ws="none",
    )


@app.command("worker")
def worker(
    processes: int = typer.Option(2, help="Worker processes."),
    threads: int = typer.Option(32, help="Threads per worker process (they wait on its folding thread)."),
) -> None:
    """dramatiq worker processes that store and fold webhooks."""
    from workers.run import supervise

    settings, engine = open_ledger("worker")
    engine.dispose()
    prepare_multiprocess_dir(settings.redis_namespace)
    raise typer.Exit(supervise(processes, threads))
