"""Codat's connection and dataset statuses, and the sync phases Synctrack derives from them."""

from __future__ import annotations

from typing import Literal, get_args

Phase = Literal["active", "succeeded", "unsupported", "failed", "stale"]

CONNECTION_STATUSES = ("PendingAuth", "Linked", "Unlinked", "Deauthorized")

IN_PROGRESS_STATUSES = (
    "Initial",
    "Queued",
    "Fetching",
    "MapQueued",
    "Mapping",
    "ProcessingQueued",
    "Processing",
    "ValidationQueued",
    "Validating",
)
"""Codat's statuses of a pull operation still running, in the order it goes through them."""

ACTIVE_STATUSES = frozenset(IN_PROGRESS_STATUSES)

PHASES: tuple[Phase, ...] = get_args(Phase)

Freshness = Literal["fresh", "overdue", "pending", "never", "paused"]
"""Whether a connection's data is current (see `workers.ledger.freshness`)."""

FRESHNESS: tuple[Freshness, ...] = get_args(Freshness)

ThresholdSource = Literal["override", "company_schedule", "client_schedule", "default"]
"""Where a data type's freshness threshold comes from, first that applies: `SYNCTRACK_FRESHNESS_OVERRIDES`,
the company's Codat `syncSchedule`, the client's, `SYNCTRACK_FRESHNESS_AFTER`."""


FINISHED_PHASES: dict[str, Phase] = {"Complete": "succeeded", "NotSupported": "unsupported"}


def phase_of(status: str) -> Phase:
    """Map a Codat dataset status to a phase; any status Codat adds later counts as failed."""
    return "active" if status in ACTIVE_STATUSES else FINISHED_PHASES.get(status, "failed")


def connection_status_rank(status: str | None) -> int:
    """Tie-break for two connection statuses stamped with the same time: the later lifecycle step wins."""
    return CONNECTION_STATUSES.index(status) + 1 if status in CONNECTION_STATUSES else 0


def outcome_rank(status: str) -> int:
    """Tie-break for two sync results of the same time: a finished result beats an active one, and a
    failure beats a success so that an error is never hidden by a simultaneous success."""
    phase = phase_of(status)
    return {"active": 0, "stale": 0, "unsupported": 1, "succeeded": 2, "failed": 3}[phase]


Health = Literal[
    "deleted",
    "unlinked",
    "needs_reauth",
    "link_failed",
    "pending",
    "platform_incident",
    "failing",
    "syncing",
    "healthy",
]
"""What a connection needs, in one word (see `workers.ledger.connection_health`)."""

HEALTH: tuple[Health, ...] = get_args(Health)
"""The health states in rule order."""

NextAction = Literal["reconnect", "refresh", "wait", "none"]
"""The one thing that helps a connection now: re-link it, refresh its data, wait for the sync, or nothing."""

TimelineKind = Literal[
    "created",
    "linked",
    "link_failed",
    "disconnected",
    "reconnected",
    "deleted",
    "sync_succeeded",
    "sync_failed",
    "sync_stale",
    "initial_read_completed",
    "refresh_requested",
    "unlink_requested",
    "delete_requested",
    "reconnect_requested",
    "health_changed",
    "freshness_changed",
    "recovered_by_reconcile",
]
"""What one item of a connection's timeline records (see `workers.ledger.timeline`)."""
