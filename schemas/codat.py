"""Codat API objects (pull operations, data status, sync settings, company pages) read once into typed values.

A pull operation becomes the same `SyncFact` the webhook parser builds, keyed by its dataset id whether an action
started it, reconciliation saw it or a legacy alert reported it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.events import Event, InvalidEnvelope, SyncFact, optional_time, parse_time
from schemas.statuses import phase_of


@dataclass(frozen=True, slots=True)
class PullOperation:
    """One Codat pull operation (a dataset): the sync of one data type on one connection."""

    id: str
    company_id: str
    connection_id: str
    data_type: str
    status: str
    requested: datetime
    completed: datetime | None
    error_message: str | None = None

    def sync_fact(self) -> SyncFact:
        issues = ({"type": self.status, "message": self.error_message},) if self.error_message else None
        return SyncFact(self.connection_id, self.data_type, self.status, self.id, self.requested, issues=issues)

    @property
    def finished(self) -> bool:
        return phase_of(self.status) != "active"

    def reconcile_event(self) -> Event:
        """The operation as an event of source `reconcile`, stamped with its completion time once finished (its
        request time before)."""
        at = (self.completed or self.requested) if self.finished else self.requested
        return Event(
            f"reconcile:{self.id}:{self.status}",
            "reconcile.pull_operation",
            at,
            self.company_id,
            syncs=(self.sync_fact(),),
            source="reconcile",
        )


@dataclass(frozen=True, slots=True)
class DataTypeStatus:
    """One entry of Codat's `dataStatus`: the latest pull operation of a data type, company-wide."""

    data_type: str
    current_status: str | None
    latest_sync_id: str | None
    latest_successful_sync_id: str | None
    last_successful_sync: datetime | None = None


@dataclass(frozen=True, slots=True)
class OpenSync:
    """An active sync the stale check asks Codat about (`workers.jobs.stale`)."""

    id: str
    company_id: str
    connection_id: str
    data_type: str
    """One data type, or ``*`` for a read of every data type of the connection."""
    requested_at: datetime
    dataset_id: str | None
    """The pull operation's id, when the sync is keyed by it (`dataset_id`)."""


@dataclass(frozen=True, slots=True)
class CodatAnswer:
    """What Codat says of an open sync: still `running` (its status), a `result` generated at or after the
    request, or (neither) nothing newer than the request."""

    running: str | None = None
    result: PullOperation | None = None


def dataset_id(sync_key: str) -> str | None:
    """The dataset id a sync is keyed by, if any: keys Synctrack makes up join their parts with ``:``."""
    return None if ":" in sync_key else sync_key


def pull_operation(raw: object) -> PullOperation:
    """Read a pull operation; raises `InvalidEnvelope` if a field Synctrack needs is missing."""
    if not isinstance(raw, dict):
        raise InvalidEnvelope("a pull operation must be a JSON object")
    for name in ("id", "companyId", "connectionId", "dataType", "status"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise InvalidEnvelope(f"a pull operation needs a string {name}")
    message = raw.get("errorMessage")
    return PullOperation(
        id=raw["id"],
        company_id=raw["companyId"],
        connection_id=raw["connectionId"],
        data_type=raw["dataType"],
        status=raw["status"],
        requested=parse_time(raw.get("requested")),
        completed=optional_time(raw.get("completed")),
        error_message=message if isinstance(message, str) and message else None,
    )


def data_status(raw: object) -> list[DataTypeStatus]:
    """Read `GET /companies/{id}/dataStatus`: an object keyed by data type."""
    if not isinstance(raw, dict):
        raise InvalidEnvelope("dataStatus must be a JSON object keyed by data type")
    return [
        DataTypeStatus(
            data_type=value.get("dataType") or key,
            current_status=value.get("currentStatus"),
            latest_sync_id=value.get("latestSyncId"),
            latest_successful_sync_id=value.get("latestSuccessfulSyncId"),
            last_successful_sync=optional_time(value.get("lastSuccessfulSync")),
        )
        for key, value in raw.items()
        if isinstance(value, dict)
    ]


def page_results(raw: object) -> tuple[list[Any], int | None]:
    """Codat's paged lists: ``{results, pageNumber, pageSize, totalResults}``; (results, total)."""
    if isinstance(raw, list):
        return raw, len(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("results"), list):
        raise InvalidEnvelope("expected a paged list: {results, pageNumber, pageSize, totalResults}")
    total = raw.get("totalResults")
    return raw["results"], total if isinstance(total, int) else None


@dataclass(frozen=True, slots=True)
class CompanyPage:
    """One page of `GET /companies`: the companies (each with `dataConnections[]`) and whether more follow."""

    results: list[dict[str, Any]]
    has_next: bool


def company_page(raw: object, page: int, page_size: int) -> CompanyPage:
    """Read a page of `GET /companies`. More pages follow when `_links.next` is given, or, where Codat leaves the
    links out, when the pages so far hold fewer than `totalResults`."""
    results, total = page_results(raw)
    companies = [c for c in results if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]]
    links = raw.get("_links") if isinstance(raw, dict) else None
    if isinstance(links, dict) and ("next" in links or "current" in links or "self" in links):
        has_next = isinstance(links.get("next"), dict) and bool(results)
    else:
        has_next = bool(results) and total is not None and page * page_size < total
    return CompanyPage(companies, has_next)


def sync_schedules(raw: object) -> dict[str, float]:
    """Each data type's `syncSchedule` in hours, from the client's or a company's sync settings; a setting without
    a number of hours (zero or more) is left out. Raises `InvalidEnvelope` when `settings` is not a list."""
    if not isinstance(raw, dict) or not isinstance(raw.get("settings"), list):
        raise InvalidEnvelope("sync settings must be a JSON object with a list of settings")
    schedules: dict[str, float] = {}
    for item in raw["settings"]:
        if not isinstance(item, dict):
            continue
        data_type, hours = item.get("dataType"), _hours(item.get("syncSchedule"))
        if isinstance(data_type, str) and data_type and hours is not None:
            schedules[data_type] = hours
    return schedules


def _hours(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None
