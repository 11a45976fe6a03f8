"""The ledger's rows, declared once: what each of its tables holds, as plain dataclasses.

The fold reads and writes these (no ORM instrumentation, no SQLAlchemy import); `workers.ledger.tables` builds
each ledger table on its row class, adding only keys, indexes and JSON storage. Times are aware UTC datetimes.
Each "last writer wins" field keeps the stamp of the fact that wrote it (`status_stamp`, ...), so that a fact
arriving late can tell whether it is newer: that is what makes the fold independent of arrival order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

R = TypeVar("R")

OPEN_PHASES = ("active", "stale")
"""Phases of a sync still waiting for its result (`stale`: waiting too long, but a result still closes it)."""


@dataclass_transform()
def row(cls: type[R]) -> type[R]:
    """A ledger row: a plain dataclass. Declared as a dataclass transform so that type checkers let a table built
    on the row (`workers.ledger.tables`) name its columns on the class, as SQL expressions."""
    return dataclass(cls)


@row
class CompanyRow:
    """A row of `companies`."""

    id: str
    name: str | None = None
    name_stamp: str = ""
    """Stamp of the company object that wrote `name`, `description` and `tags` (they win together)."""
    deleted_at: datetime | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None


@row
class ConnectionRow:
    """A row of `connections`."""

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
    """The earliest `read.completed.initial` of the connection: its first read of every data type finished."""
    last_link_failure_at: datetime | None = None
    """When the latest `connection.failed` was generated; `last_link_failure` says why (status_code,
    status_text, message), `last_link_failure_stamp` orders them."""
    last_link_failure: dict[str, Any] | None = None
    last_link_failure_stamp: str = ""
    last_linked_at: datetime | None = None
    """When the connection last became Linked (the latest `connection.connected`/`reconnected`): results before
    it do not count towards its health."""


@row
class DataTypeRow:
    """A row of `data_types`: the latest result of one data type of one connection."""

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


@row
class SyncRow:
    """A row of `syncs`: one sync, open (`active`, `stale`) or finished."""

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
    """Still active because Codat says the sync is still running (written by the stale check, not the fold)."""
    codat_status: str | None = None
    """What Codat last said of a delayed sync (`Queued`, `Fetching`, ...)."""
    next_check_at: datetime | None = None
    """When the stale check asks Codat about a delayed sync again."""
    check_wait_seconds: float | None = None
    """The stale check's current wait between questions: doubles while Codat's answer stays the same."""


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
