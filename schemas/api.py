"""The JSON objects the API, the stream and outbound deliveries share: one schema, one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer

from schemas.statuses import Freshness, Health, NextAction, ThresholdSource, TimelineKind


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a time without an offset is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_time(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(format_time, return_type=str, when_used="json")]
"""On the wire every time is ISO 8601 UTC with a ``Z``."""

TimeIn = Annotated[datetime, AfterValidator(as_utc)]
"""A time a request gives, read as UTC."""


class ApiModel(BaseModel):
    """A JSON object of the API: each field's docstring is its description in the OpenAPI document."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class RequestBody(ApiModel):
    """A request body: an unknown field is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):  # pydantic cannot read the docstrings of a parametrized class
    items: list[T]
    next_cursor: str | None = None


class ErrorBody(ApiModel):
    error: str
    detail: str


class CompanyOut(ApiModel):
    id: str
    name: str | None
    connection_count: int
    """Connections not deleted."""
    deleted_at: UtcTime | None = None
    """When Codat deleted the company (`company.deleted`); a deleted company stays listed as audit material."""
    description: str | None = None
    tags: dict[str, Any] | None = None
    """Codat's company tags (`{"region": "uk"}`), when known."""


class LinkFailureOut(ApiModel):
    """Why the latest link attempt failed (`connection.failed`), from its first active error entry."""

    at: UtcTime
    """The `generatedDate` of that `connection.failed`."""
    status_code: str | None
    """Codat's `statusCode`, as text (`"403"`)."""
    status_text: str | None
    message: str | None
    """Codat's `errorMessage`."""


class ConnectionOut(ApiModel):
    id: str
    company_id: str
    company_name: str | None
    platform_key: str | None
    platform_name: str | None
    source_type: str | None
    status: str | None
    created_at: UtcTime | None
    linked_at: UtcTime | None
    disconnected_at: UtcTime | None
    deleted_at: UtcTime | None
    first_sync_at: UtcTime | None
    last_sync_at: UtcTime | None
    last_successful_sync_at: UtcTime | None
    last_sync_status: str | None
    sync_active: bool
    link_url: str | None
    metadata: dict[str, Any]
    errors: list[dict[str, Any]]
    active_errors: list[dict[str, Any]]
    """The entries of `errors` that are current: Codat's `status` Active, or null without `resolvedOnUtc`."""
    initial_read_completed_at: UtcTime | None
    """When the connection's first read of all its data types finished (the earliest `read.completed.initial`)."""
    last_link_failure: LinkFailureOut | None
    """Why the latest link attempt failed (the latest `connection.failed`), kept after a later successful link."""
    freshness: Freshness
    """`fresh`, `overdue`, `pending`, `never` or `paused`: the worst of its data types."""
    expected_by: UtcTime | None
    """The next deadline: the earliest `expected_by` of its data types."""
    overdue_data_types: list[str]
    health: Health
    """What the connection needs, in one word: the first state that applies (see docs/health.md)."""
    health_reason: str
    """One sentence for the customer saying why, naming the platform and, where one is involved, the data type."""
    next_action: NextAction
    """The one step that helps now: `reconnect` (re-link the connection), `refresh` (sync again), `wait` (a sync is
    running, or the platform is having an incident) or `none`."""
    health_data_type: str | None
    """The data type `health_reason` is about (the one that failed), or null."""
    last_linked_at: UtcTime | None
    """When the connection last became Linked; results before it do not count towards its health. `linked_at` is
    the first time."""
    deauthorization_risk_at: UtcTime | None
    """When Codat may deauthorize the connection unless it syncs: its last completed sync or link, whichever is
    later, plus `SYNCTRACK_DEAUTHORIZE_AFTER`; null unless Linked."""


class DataTypeOut(ApiModel):
    data_type: str
    status: str
    phase: str
    last_sync_at: UtcTime | None
    last_successful_sync_at: UtcTime | None
    records_modified: bool | None
    freshness: Freshness
    expected_by: UtcTime | None
    threshold_seconds: float
    """How old the last successful sync may be before this data type is overdue."""
    threshold_source: ThresholdSource
    """Where the threshold comes from: `override`, `company_schedule`, `client_schedule` or `default`."""


class ConnectionDetail(ConnectionOut):
    data_types: list[DataTypeOut]


class SyncOut(ApiModel):
    id: str
    company_id: str
    connection_id: str
    data_type: str
    status: str
    phase: str
    requested_at: UtcTime | None
    completed_at: UtcTime | None
    records_modified: bool | None
    issues: list[dict[str, Any]] | None
    source: str
    event_id: str | None
    delayed: bool = False
    """Still active because Codat, asked once the sync waited SYNCTRACK_SYNC_STALE_AFTER, says it is still running
    it."""
    codat_status: str | None = None
    """What Codat said of a delayed sync (Queued, Fetching, ...); null otherwise."""
    typical_duration_seconds: float | None = None
    """Phase `active` only: the median `completed_at - requested_at` of the latest 20 succeeded syncs of this
    connection and data type that have both (with fewer than 3, of the same platform and data type across all
    companies); null with fewer than 3 there too."""
    expected_completion_at: UtcTime | None = None
    """Phase `active` only: `requested_at` + `typical_duration_seconds`, or null."""


class TimelineItemOut(ApiModel):
    """One moment of a connection's life (`GET /v1/connections/{connection_id}/timeline`), newest first."""

    at: UtcTime
    kind: TimelineKind
    summary: str
    """A sentence for people: "Xero was disconnected by the customer"."""
    data_type: str | None
    """The data type involved (Codat's name), or null."""
    event_id: str | None
    """The webhook behind it (or `audit:{id}` for a request made through Synctrack), or null."""
    actor: str | None
    """Who made a request (the audit log's actor); null for anything else."""


class EventOut(ApiModel):
    id: str
    event_type: str
    envelope_id: str | None
    company_id: str | None
    connection_id: str | None
    generated_at: UtcTime | None
    received_at: UtcTime
    processed_at: UtcTime | None
    outcome: str
    error: str | None


class EventDetail(EventOut):
    body: Any
    """The body as received, parsed; null once pruned by retention."""


class MissedWebhookOut(ApiModel):
    """A result reconciliation folded that no webhook had reported (`GET /v1/admin/missed`), newest found first."""

    company_id: str
    connection_id: str
    data_type: str
    dataset_id: str
    """Codat's pull operation (dataset) id."""
    status: str
    """Codat's dataset status of the result: `Complete`, `FetchError`, …"""
    completed_at: UtcTime | None
    found_at: UtcTime
    """When reconciliation folded it."""


class IncidentOut(ApiModel):
    """A platform incident (`GET /v1/platforms/incidents`, `platform.incident_opened` / `_closed`)."""

    id: str
    platform_key: str
    platform_name: str | None
    data_types: list[str]
    """The data types whose failures the incident counts, sorted."""
    opened_at: UtcTime
    """The completion time of the result that made the window cross the thresholds."""
    closed_at: UtcTime | None
    """When the window's failure share fell below half the threshold (or it held no failure); null while open."""
    affected_connections: int
    """Distinct connections with a failure counted in the incident."""
    failure_share: float
    """The platform's share of failed results in the window that opened the incident."""
