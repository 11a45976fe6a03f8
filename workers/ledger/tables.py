"""Synctrack's tables (SQLModel). The four ledger tables are built on their rows (`workers.ledger.rows`), adding
only keys, indexes and JSON storage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Table, Text
from sqlmodel import Field, SQLModel

from workers.ledger.rows import CompanyRow, ConnectionRow, DataTypeRow, SyncRow


class Company(SQLModel, CompanyRow, table=True):
    __tablename__ = "companies"

    id: str = Field(primary_key=True)
    tags: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class Connection(SQLModel, ConnectionRow, table=True):
    __tablename__ = "connections"

    id: str = Field(primary_key=True)
    company_id: str = Field(index=True)
    errors: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    connection_info: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    last_link_failure: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class DataTypeState(SQLModel, DataTypeRow, table=True):
    __tablename__ = "data_types"

    connection_id: str = Field(primary_key=True)
    data_type: str = Field(primary_key=True)
    company_id: str = Field(index=True)


class Sync(SQLModel, SyncRow, table=True):
    __tablename__ = "syncs"
    __table_args__ = (
        Index("ix_syncs_connection_sort", "connection_id", "sort_at"),
        Index("ix_syncs_phase", "phase", "company_id"),
        Index("ix_syncs_completed", "completed_at"),
    )

    id: str = Field(primary_key=True)
    company_id: str = Field(index=True)
    issues: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))


class WebhookEvent(SQLModel, table=True):
    """Every webhook as it arrived: the source of truth the ledger can be rebuilt from."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_received", "received_at", "id"),
        Index("ix_webhook_events_company", "company_id", "received_at"),
    )

    id: str = Field(primary_key=True)
    """The Svix message id (`webhook-id`): the idempotency key."""
    event_type: str = Field(index=True)
    envelope_id: str | None = None
    company_id: str | None = None
    connection_id: str | None = Field(default=None, index=True)
    generated_at: datetime | None = Field(default=None, index=True)
    received_at: datetime
    processed_at: datetime | None = None
    body: str | None = Field(default=None, sa_column=Column(Text))
    """None once pruned by retention (the row stays as a tombstone)."""
    outcome: str = Field(default="pending", index=True)
    """`pending`, `processed`, `ignored` (changes nothing; `error` says why) or `failed` (not usable)."""
    error: str | None = None


class AuditRecord(SQLModel, table=True):
    """One action a user asked Synctrack to take against Codat, and what came of it."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str | None = None
    action: str
    company_id: str = Field(index=True)
    connection_id: str | None = None
    data_type: str | None = None
    result: str
    codat_status: int | None = None
    detail: str | None = None
    confirmed_by_event_id: str | None = None
    confirmed_at: datetime | None = None


class ReplayJob(SQLModel, table=True):
    """A replay of stored webhooks: what it selects and how far it got (so it can resume)."""

    __tablename__ = "replay_jobs"

    id: str = Field(primary_key=True)
    created_at: datetime
    filters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = "running"
    total: int = 0
    done: int = 0
    cursor: str | None = None
    error: str | None = None
    finished_at: datetime | None = None


class Subscription(SQLModel, table=True):
    """A URL that receives matching changes as signed webhooks; `previous_secret` keeps signing beside `secret`
    until `previous_secret_expires_at`."""

    __tablename__ = "subscriptions"

    id: str = Field(primary_key=True)
    url: str
    description: str | None = None
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    company_ids: list[str] | None = Field(default=None, sa_column=Column(JSON))
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    enabled: bool = Field(default=True, index=True)
    disabled_reason: str | None = None
    """`manual`, `gone` (the receiver answered 410) or `failing` (failed too long)."""
    disabled_at: datetime | None = None
    failing_since: datetime | None = None
    created_at: datetime
    updated_at: datetime


class Delivery(SQLModel, table=True):
    """One event for one subscription, and how its attempts went. `id` is derived from (subscription, event), so
    recording a change twice is a no-op; an attempt claims the row by moving `next_attempt_at` past its time limit."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_subscription_created", "subscription_id", "created_at", "id"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True)
    subscription_id: str = Field(foreign_key="subscriptions.id", ondelete="CASCADE")
    event_id: str
    event_type: str
    company_id: str | None = None
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "pending"
    """`pending`, `delivered` (a 2xx) or `failed` (gave up, or the subscription was disabled)."""
    attempts: int = 0
    last_response_code: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    window_started_at: datetime
    """Retries stop once an attempt would fall beyond the retry window counted from here."""
    created_at: datetime


class ImportJob(SQLModel, table=True):
    """An import of an existing Codat account, resumable: `next_page` is the next page of `GET /companies` to read
    (None when done or the job names its companies); a runner claims it by `runner` and `heartbeat_at`."""

    __tablename__ = "import_jobs"

    id: str = Field(primary_key=True)
    created_at: datetime
    status: str = "pending"
    """`pending`, `running`, `completed`, `interrupted` or `failed` (could not list)."""
    company_ids: list[str] | None = Field(default=None, sa_column=Column(JSON))
    """None = every company Codat lists."""
    lookback_hours: float = 72.0
    next_page: int | None = None
    total: int = 0
    done: int = 0
    failed: int = 0
    folded: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    runner: str | None = None
    heartbeat_at: datetime | None = None


class ImportCompany(SQLModel, table=True):
    """One company of an import job: `pending`, `done` or `failed` (with why), and what it folded."""

    __tablename__ = "import_companies"
    __table_args__ = (Index("ix_import_companies_job_status", "job_id", "status"),)

    job_id: str = Field(primary_key=True)
    company_id: str = Field(primary_key=True)
    position: int = 0
    """Order of discovery (Codat's order)."""
    status: str = "pending"
    listing: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """The company as `GET /companies` listed it; None = read it from Codat."""
    folded: int = 0
    error: str | None = None
    attempts: int = 0
    connections: int = 0
    syncs: int = 0
    """Pull operations folded as syncs (those the ledger lacked)."""


class FreshnessRecord(SQLModel, table=True):
    """The freshness and health last announced of each connection, so a change is announced once (a rebuild
    leaves it alone; `workers.ledger.freshness_state`)."""

    __tablename__ = "connection_freshness"

    connection_id: str = Field(primary_key=True)
    company_id: str = Field(index=True)
    freshness: str = Field(index=True)
    expected_by: datetime | None = Field(default=None, index=True)
    overdue_data_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    changed_at: datetime
    """When `freshness` last changed."""
    health: str | None = Field(default=None, index=True)
    health_changed_at: datetime | None = None


class StateChange(SQLModel, table=True):
    """One announced change of a connection's freshness or health, for its timeline; `event_id` caused it."""

    __tablename__ = "connection_state_changes"
    __table_args__ = (Index("ix_connection_state_changes_connection_at", "connection_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    connection_id: str
    company_id: str
    at: datetime
    kind: str
    """`health_changed` or `freshness_changed`."""
    previous: str | None = None
    current: str
    event_id: str | None = None


class SyncSchedule(SQLModel, table=True):
    """Codat's `syncSchedule` per data type as last read, of the client (`scope` "client", `company_id` "") or of
    one company (`scope` "company"); see `workers.ledger.schedules`."""

    __tablename__ = "sync_schedules"

    scope: str = Field(primary_key=True)
    company_id: str = Field(primary_key=True)
    hours: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    fetched_at: datetime = Field(index=True)


class MissedWebhook(SQLModel, table=True):
    """A result reconciliation folded that no webhook had reported; never removed (a rebuild leaves it alone)."""

    __tablename__ = "missed_webhooks"
    __table_args__ = (Index("ix_missed_webhooks_found", "found_at", "dataset_id"),)

    dataset_id: str = Field(primary_key=True)
    company_id: str = Field(index=True)
    connection_id: str = Field(index=True)
    data_type: str
    status: str
    completed_at: datetime | None = None
    found_at: datetime
    source_type: str
    """The connection's `sourceType`, bounded as the metrics' label."""


class ReconcileRequest(SQLModel, table=True):
    """A targeted reconciliation asked for (a Linked connection's data type turned overdue); only inserted, so no
    key is contended for in a fold's transaction."""

    __tablename__ = "reconcile_requests"

    id: int | None = Field(default=None, primary_key=True)
    company_id: str = Field(index=True)
    requested_at: datetime


class OverdueReconcile(SQLModel, table=True):
    """When a company's last targeted reconciliation ran, so two are an hour apart (written by its job only)."""

    __tablename__ = "overdue_reconciles"

    company_id: str = Field(primary_key=True)
    reconciled_at: datetime


class BundleRefresh(SQLModel, table=True):
    """One refresh of a company's bundle: `pending` until every member succeeded at or after `requested_at`
    (`ready`), or a newer refresh supersedes it (`superseded`)."""

    __tablename__ = "bundle_refreshes"
    __table_args__ = (Index("ix_bundle_refreshes_company_status", "company_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    company_id: str
    bundle: str
    data_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    requested_at: datetime
    actor: str | None = None
    status: str = "pending"
    ready_at: datetime | None = None
    as_of: datetime | None = None


class PlatformIncident(SQLModel, table=True):
    """A platform's incident, as derived from `syncs` (`workers.ledger.incidents`) and keyed by platform and
    opening time; only `refresh_state` (`pending`, `done` or `none`) is not derived."""

    __tablename__ = "platform_incidents"
    __table_args__ = (Index("ix_platform_incidents_opened", "opened_at", "id"),)

    id: str = Field(primary_key=True)
    platform_key: str = Field(index=True)
    platform_name: str | None = None
    data_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    opened_at: datetime
    failures_since: datetime
    """The failures counted are those completed after this (the start of the window that opened it)."""
    closed_at: datetime | None = Field(default=None, index=True)
    affected_connections: int = 0
    failure_share: float = 0.0
    refresh_state: str = "none"


COMPANIES: Table = Company.__table__  # type: ignore[attr-defined]
CONNECTIONS: Table = Connection.__table__  # type: ignore[attr-defined]
DATA_TYPES: Table = DataTypeState.__table__  # type: ignore[attr-defined]
SYNCS: Table = Sync.__table__  # type: ignore[attr-defined]
