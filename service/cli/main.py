"""The `synctrack` command: run the service (dev, web, worker) and look after its database."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from schemas.settings import Settings
from service.cli import codat as codat_cli
from service.cli import deadletters as ops_cli
from service.cli import replay as replay_cli
from service.cli import tokens as token_cli
from service.security import auth_mode
from workers.runtime.logs import configure_logging
from workers.runtime.metrics import prepare_multiprocess_dir

app = typer.Typer(help="Synctrack: Codat connections and their syncs, tracked.", no_args_is_help=True)
db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_cli.app, name="token")


def _database_location(url: str) -> str:
    if url.startswith("sqlite:///"):
        return str(Path(url.removeprefix("sqlite:///")).resolve())
    return url.split("@")[-1]


@app.command()
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
    typer.echo(f"  database: {_database_location(settings.database_url)}")
    typer.echo("  queue:    in-process (events not yet folded are lost if this process stops)")
    typer.echo(f"  webhooks: POST http://{host}:{port}/webhooks/codat")
    if not settings.webhook_secrets:
        typer.echo("  warning:  SYNCTRACK_WEBHOOK_SECRETS is empty, so every webhook will be rejected")
    typer.echo("\n".join(auth_lines))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, timeout_graceful_shutdown=10)
    finally:
        worker.stop()


@app.command()
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
        # Named, not left to "auto": without them the receiver runs at half speed (bench/RESULTS.md).
        loop="uvloop",
        http="httptools",
    )


@app.command()
def worker(
    processes: int = typer.Option(2, help="Worker processes."),
    threads: int = typer.Option(32, help="Threads per worker process (they wait on its folding thread)."),
) -> None:
    """dramatiq worker processes that store and fold webhooks."""
    from workers.run import supervise
    from workers.runtime.db import SchemaOutOfDate, make_engine, require_current_schema

    settings = Settings()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    try:
        require_current_schema(engine, settings.database_url)
    except SchemaOutOfDate as exc:
        typer.echo(f"synctrack worker: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    prepare_multiprocess_dir(settings.redis_namespace)
    raise typer.Exit(supervise(processes, threads))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Create or migrate the ledger schema."""
    from workers.runtime.db import upgrade

    settings = Settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database {_database_location(settings.database_url)} is at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the one this code needs."""
    from workers.runtime.db import current_revision, head_revision, make_engine

    settings = Settings()
    engine = make_engine(settings.database_url)
    typer.echo(f"database: {current_revision(engine)}  code: {head_revision(settings.database_url)}")


codat_cli.register(app)
replay_cli.register(app)
ops_cli.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
