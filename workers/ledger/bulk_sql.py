"""Many rows in one statement. On PostgreSQL a table's rows go as one statement with one array parameter per column
(``INSERT … SELECT * FROM unnest(…)``), its text cached; SQLite keeps SQLAlchemy's executemany."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import JSON, Table, bindparam, insert, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]

IN_CHUNK = 500
"""Longest ``IN`` list per statement."""

T = TypeVar("T")


def chunked(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `IN_CHUNK`, one per ``IN`` list."""
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _pg_type(table: Table, column: str) -> str:
    return str(table.c[column].type.compile(dialect=_PG))


def pg_arrays(table: Table, columns: Sequence[str]) -> str:
    """One binary array parameter per column, each cast to its column's type: `%b::VARCHAR[], %b::INTEGER[]`."""
    return ", ".join(f"%b::{_pg_type(table, c)}[]" for c in columns)


def _is_json(table: Table, column: str) -> bool:
    kind = table.c[column].type
    return isinstance(getattr(kind, "impl", kind), JSON) or isinstance(kind, JSON)


@lru_cache(maxsize=64)
def _pg_insert_sql(table: Table, columns: tuple[str, ...], keys: tuple[str, ...], updates: tuple[str, ...]) -> str:
    sql = f'INSERT INTO "{table.name}" ({", ".join(columns)}) SELECT * FROM unnest({pg_arrays(table, columns)})'
    if keys:
        action = "UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates) if updates else "NOTHING"
        sql += f" ON CONFLICT ({', '.join(keys)}) DO {action}"
    return sql


@lru_cache(maxsize=64)
def _pg_update_sql(table: Table, key: str, columns: tuple[str, ...]) -> str:
    names = (key, *columns)
    arrays = pg_arrays(table, names)
    sets = ", ".join(f"{c} = u.{c}" for c in columns)
    return (
        f'UPDATE "{table.name}" AS t SET {sets} FROM unnest({arrays}) AS u({", ".join(names)}) WHERE t.{key} = u.{key}'
    )


def _pg_arrays(table: Table, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    from psycopg.types.json import Json

    arrays = []
    for column in columns:
        values = [row[column] for row in rows]
        if _is_json(table, column):
            values = [None if v is None else Json(v) for v in values]
        arrays.append(values)
    return arrays


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str] = (),
    update_columns: Sequence[str] | None = None,
) -> None:
    """Insert `rows` (dicts with the same keys). On a `conflict` key the row's `update_columns` (default: all but
    the keys; none: left alone) are updated; without `conflict` a duplicate raises."""
    if not rows:
        return
    columns = tuple(rows[0])
    keys = tuple(conflict)
    updates = tuple(c for c in columns if c not in keys) if update_columns is None else tuple(update_columns)
    if _is_postgres(session):
        sql = _pg_insert_sql(table, columns, keys, updates if keys else ())
        session.connection().exec_driver_sql(sql, tuple(_pg_arrays(table, columns, rows)))
        return
    if not keys:
        session.execute(insert(table), list(rows))
        return
    stmt = sqlite_insert(table)
    if updates:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={c: stmt.excluded[c] for c in updates})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(stmt, list(rows))


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], key: str) -> None:
    """Update existing rows by `key`: each dict names the key and the columns to set (the same for all)."""
    if not rows:
        return
    columns = tuple(c for c in rows[0] if c != key)
    if _is_postgres(session):
        sql = _pg_update_sql(table, key, columns)
        session.connection().exec_driver_sql(sql, tuple(_pg_arrays(table, (key, *columns), rows)))
        return
    stmt = update(table).where(table.c[key] == bindparam("_key")).values({c: bindparam(c) for c in columns})
    session.connection().execute(stmt, [{**{c: row[c] for c in columns}, "_key": row[key]} for row in rows])
