"""The ledger's rows, declared once as plain dataclasses: the fold works on these (no ORM instrumentation), and
`workers.ledger.tables` builds each ledger table on its row. Each last-writer-wins field keeps the stamp of the fact
that wrote it, so a late fact can tell whether it is newer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cache
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

R = TypeVar("R")

OPEN_PHASES = ("active", "stale")
"""Phases of a sync still waiting for its result (`stale`: waiting too long, but a result still closes it)."""


@dataclass_transform()
def row(cls: type[R]) -> type[R]:
    """A plain dataclass, declared a dataclass transform so a table built on it may name its columns as SQL."""
    return dataclass(cls)


@row
class CompanyRow:
    id: str
    name: str | None = None
    name_stamp: str = ""
    """Stamp of the company object that wrote `name`, `description` and `tags` (they win together)."""
    deleted_at: datetime | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None


@row
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
    """When the latest `connection.failed` was generated; `last_link_failure` says why."""
    last_link_failure: dict[str, Any] | None = None
    last_link_failure_stamp: str = ""
    last_linked_at: datetime | None = None
    """When it last became Linked: results before it do not count towards its health."""


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
    """Still active because Codat says it is still running (this and the next three: the stale check's)."""
    codat_status: str | None = None
    next_check_at: datetime | None = None
    check_wait_seconds: float | None = None


@cache
def column_names(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(row_type))


@cache
def _getter(row_type: type) -> Callable[[Any], tuple[Any, ...]]:
    return attrgetter(*column_names(row_type))


def fingerprint(row: Any) -> tuple[Any, ...]:
    """Everything the row holds, to tell afterwards whether the fold changed it."""
    return _getter(row.__class__)(row)


def as_values(row: Any) -> dict[str, Any]:
    """The row as column -> value, for an INSERT."""
    return dict(zip(column_names(row.__class__), fingerprint(row), strict=True))
