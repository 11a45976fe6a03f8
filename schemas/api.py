"""The JSON objects the API, the stream and outbound deliveries share: one schema, one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field, PlainSerializer

from schemas.statuses import Freshness, Health, NextAction, ThresholdSource, TimelineKind

UtcTime = Annotated[
    datetime,
    PlainSerializer(lambda d: format_time(d), return_type=str, when_used="json"),
]
"""On the wire every time is ISO 8601 UTC with a ``Z``."""


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    error: str
    detail: str


class CompanyOut(BaseModel):
    id: str
    name: str | None
    connection_count: int
    """Connections not deleted."""
    deleted_at: UtcTime | None = None
    """When Codat deleted the company (`company.deleted`); a deleted company stays listed as audit material."""
    description: str | None = None
    tags: dict[str, Any] | None = None
    """Codat's company tags (`{"region": "uk"}`), when known."""


class LinkFailureOut(BaseModel):
    """Why the latest link attempt failed (`connection.failed`), from its first active error entry."""

    at: UtcTime
    """The `generatedDate` of that `connection.failed`."""
    status_code: str | None
    """Codat's `statusCode`, as text (`"403"`)."""
    status_text: str | None
    message: str | None
    """Codat's `errorMessage`."""


class ConnectionOut(BaseModel):
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
    active_errors: list[dict[str, Any]] = Field(
        description="The entries of `errors` that are current: Codat's `status` Active, or null without "
        "`resolvedOnUtc`."
    )
    initial_read_completed_at: UtcTime | None = Field(
        description="When the connection's first read of all its data types finished (the earliest "
        "`read.completed.initial`); null until then."
    )
    last_link_failure: LinkFailureOut | None = Field(
        description="Why the latest link attempt failed (the `connection.failed` with the latest `generatedDate`); "
        "null if none was received. Kept after a later successful link."
    )
    freshness: Freshness
    """`fresh`, `overdue`, `pending`, `never` or `paused`: the worst of its data types."""
    expected_by: UtcTime | None
    """The next deadline: the earliest `expected_by` of its data types."""
    overdue_data_types: list[str]
    health: Health = Field(
        description="What the connection needs, in one word: `deleted`, `unlinked`, `needs_reauth`, `link_failed`, "
        "`pending`, `platform_incident`, `failing`, `syncing` or `healthy` (the first that applies; see "
        "docs/health.md)."
    )
    health_reason: str = Field(
        description="One sentence for the customer saying why, naming the platform and, where one is involved, "
        "the data type."
    )
    next_action: NextAction = Field(
        description="The one step that helps now: `reconnect` (re-link the connection), `refresh` (sync again), "
        "`wait` (a sync is running, or the platform is having an incident) or `none`."
    )
    health_data_type: str | None = Field(
        description="The data type `health_reason` is about (the one that failed), or null."
    )
    last_linked_at: UtcTime | None = Field(
        description="When the connection last became Linked (the latest `connection.connected` or `reconnected`); "
        "results before it do not count towards its health. `linked_at` is the first time."
    )
    deauthorization_risk_at: UtcTime | None = Field(
        description="When Codat may deauthorize the connection unless it syncs: the latest of its last completed "
        "sync and the time it last became Linked, plus `SYNCTRACK_DEAUTHORIZE_AFTER`; null unless Linked."
    )


class DataTypeOut(BaseModel):
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


class SyncOut(BaseModel):
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
    delayed: bool = Field(
        False,
        description="Still active because Codat, asked once the sync waited SYNCTRACK_SYNC_STALE_AFTER, "
        "says it is still running it.",
    )
    codat_status: str | None = Field(
        None, description="What Codat said of a delayed sync (Queued, Fetching, ...); null otherwise."
    )
    typical_duration_seconds: float | None = Field(
        default=None,
        description="Phase `active` only: the median `completed_at - requested_at` of the latest 20 succeeded syncs "
        "of this connection and data type that have both (with fewer than 3, of the same platform and data type "
        "across all companies); null with fewer than 3 there too, and for syncs not active.",
    )
    expected_completion_at: UtcTime | None = Field(
        default=None,
        description="Phase `active` only: `requested_at` + `typical_duration_seconds`, or null.",
    )


class TimelineItemOut(BaseModel):
    """One moment of a connection's life (`GET /v1/connections/{connection_id}/timeline`), newest first."""

    at: UtcTime
    kind: TimelineKind
    summary: str = Field(description='A sentence for people: "Xero was disconnected by the customer".')
    data_type: str | None = Field(description="The data type involved (Codat's name), or null.")
    event_id: str | None = Field(
        description="The webhook behind it (or `audit:{id}` for a request made through Synctrack), or null."
    )
    actor: str | None = Field(description="Who made a request (the audit log's actor); null for anything else.")


class EventOut(BaseModel):
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


class MissedWebhookOut(BaseModel):
    """A result reconciliation folded that no webhook had reported (`GET /v1/admin/missed`), newest found first."""

    company_id: str
    connection_id: str
    data_type: str
    dataset_id: str = Field(description="Codat's pull operation (dataset) id.")
    status: str = Field(description="Codat's dataset status of the result: `Complete`, `FetchError`, …")
    completed_at: UtcTime | None
    found_at: UtcTime = Field(description="When reconciliation folded it.")


class IncidentOut(BaseModel):
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
