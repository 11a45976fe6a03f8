"""Database engines and the schema-version check.

SQLite runs in WAL mode and begins every writing transaction with ``BEGIN IMMEDIATE`` (one writer: taking the lock
up front queues two folds instead of failing one). The start-up check reads the version with plain SQL, so only
`upgrade` imports alembic.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"


class SchemaOutOfDate(ConfigError, RuntimeError):
    """Raised when a production process finds the database behind the code's migrations."""


def normalise_url(url: str) -> str:
    """Accept the `postgresql://` URLs people paste and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


READ_ONLY = "synctrack_read_only"


def reader(engine: Engine) -> Engine:
    """`engine` (the same pool) for transactions that only read: on SQLite they begin DEFERRED, taking no write
    lock, so reads do not wait on each other or on every worker's write."""
    return engine.execution_options(**{READ_ONLY: True})


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    # A failed statement's parameters (webhook bodies among them) must not reach a log line or a
    # dead letter's traceback through the exception's message.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event issue BEGIN
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    if "poolclass" not in kwargs:
        kwargs = {"pool_size": 10, "max_overflow": 20, **kwargs}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the schema (what `synctrack db upgrade` runs)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def _revision_ids(path: Path) -> tuple[str | None, set[str]]:
    """A migration file's ``revision`` and the revisions it follows (``down_revision``: one, several, or None)."""
    found = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign) and isinstance(target := node.targets[0], ast.Name)
        if target.id in ("revision", "down_revision")
    }
    down = found.get("down_revision")
    return found.get("revision"), {down} if isinstance(down, str) else set(down or ())


def head_revision() -> str | None:
    """The newest revision of the code's migrations (the one no other follows); None without migrations. Raises
    RuntimeError when the migrations branch into several heads (a merge migration is missing)."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        revision, follows = _revision_ids(path)
        if revision is not None:
            revisions.add(revision)
            followed |= follows
    heads = revisions - followed
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads: {', '.join(sorted(heads))}")
    return next(iter(heads), None)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, as alembic recorded it; None for a database never migrated."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        versions = sorted(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    return ",".join(versions) or None


def require_current_schema(engine: Engine) -> None:
    """Refuse to run on a schema older (or newer) than this code expects (raises SchemaOutOfDate)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this code needs {head}: "
            "run `synctrack db upgrade` (with the same SYNCTRACK_DATABASE_URL) and start again"
        )
