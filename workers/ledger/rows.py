"""The ledger's rows as plain dataclasses: what the fold reads and writes.

The tables themselves are SQLModel classes in `workers.ledger.tables` (schema, migrations, API queries). The
fold works on these lighter twins instead — instrumented ORM objects cost more per attribute write than
the fold's whole rule — and the store moves rows between the two with SQLAlchemy Core. The fields equal
the tables' columns; `tests/ledger/test_store.py` checks that they stay equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

R = TypeVar("R")

OPEN_PHASES = ("active", "stale")
"""Phases of a sync still waiting for its result (`stale`: waiting too long, but a result still closes it)."""


@dataclass(slots=True)
class CompanyRow:
    id: str
    name: str | None = None
    name_stamp: str = ""
    deleted_at: datetime | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None


@dataclass(slots=True)
class ConnectionRow:
    id: str
    company_id: str
    platform_key: str | None = None
    platform_name: str | None = None
    source_type: str | None = None
    status: str | None = None
    status_stamp: str = ""
    details_stamp: str = ""
    link_url: str | None = None
    errors: list[dict[str, Any]] | None = None
    connection_info: dict[str, Any] | None = None
    created_at: datetime | None = None
    linked_at: datetime | None = None
    disconnected_at: datetime | None = None
    deleted_at: datetime | None = None
    first_sync_at: datetime | None = None
    last_sync_at: datetime | None = None
    last_successful_sync_at: datetime | None = None
    last_sync_status: str | None = None
    last_sync_stamp: str = ""
    initial_read_completed_at: datetime | None = None
    last_link_failure_at: datetime | None = None
    last_link_failure: dict[str, Any] | None = None
    last_link_failure_stamp: str = ""


@dataclass(slots=True)
class DataTypeRow:
    connection_id: str
    data_type: str
    company_id: str
    status: str
    phase: str
    stamp: str = ""
    records_modified: bool | None = None
    last_sync_at: datetime | None = None
    last_successful_sync_at: datetime | None = None
    first_successful_sync_at: datetime | None = None


@dataclass(slots=True)
class SyncRow:
    id: str
    company_id: str
    connection_id: str
    data_type: str
    status: str
    phase: str
    sort_at: datetime
    stamp: str = ""
    requested_at: datetime | None = None
    completed_at: datetime | None = None
    records_modified: bool | None = None
    issues: list[dict[str, Any]] | None = None
    source: str = "webhook"
    event_id: str | None = None
    delayed: bool = False
    codat_status: str | None = None
    next_check_at: datetime | None = None
    check_wait_seconds: float | None = None


_COLUMNS: dict[type, tuple[str, ...]] = {}
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def column_names(row_type: type) -> tuple[str, ...]:
    names = _COLUMNS.get(row_type)
    if names is None:
        names = _COLUMNS[row_type] = tuple(f.name for f in fields(row_type))
    return names


def _getter(row_type: type) -> Callable[[Any], tuple[Any, ...]]:
    getter = _GETTERS.get(row_type)
    if getter is None:
        getter = _GETTERS[row_type] = attrgetter(*column_names(row_type))
    return getter


def fingerprint(row: Any) -> tuple[Any, ...]:
    """Everything the row holds, to tell afterwards whether the fold changed it."""
    return _getter(type(row))(row)


def clone(row: R) -> R:
    """A shallow copy of a row (a fresh dataclass with the same field values)."""
    return type(row)(*_getter(type(row))(row))


def as_values(row: Any) -> dict[str, Any]:
    """The row as column -> value, for an INSERT."""
    return dict(zip(column_names(type(row)), fingerprint(row), strict=True))
