"""The admin API's objects: replay selections and jobs, dead letters."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, model_validator

from schemas.api import ApiModel, EventOut, RequestBody, TimeIn, UtcTime
from schemas.settings import split

StoredOutcome = Literal["pending", "processed", "ignored", "failed"]
JobStatus = Literal["pending", "running", "completed", "interrupted", "cancelled", "failed"]

DEFAULT_REPLAY_RATE = 1_000.0
"""Events per second a replay enqueues unless told otherwise: well below what workers fold, so live
webhooks never wait long behind a replay."""
DEFAULT_MAX_BACKLOG = 5_000
"""A replay pauses while the webhook queue holds more than this many messages."""


def _as_list(value: object) -> object:
    if isinstance(value, str):
        return split(value)
    return [] if value is None else value


T = TypeVar("T")
Selector = Annotated[list[T], BeforeValidator(_as_list)]
"""Any of these values; a string gives them comma-separated, null none."""


class ReplayFilters(RequestBody):
    """Which stored events a replay selects: every given selector must match (AND); a list matches any
    of its values. Times: `*_from` inclusive, `*_to` exclusive, ISO 8601 (UTC when no offset)."""

    event_id: Selector[str] = []
    company_id: Selector[str] = []
    connection_id: Selector[str] = []
    event_type: Selector[str] = []
    outcome: Selector[StoredOutcome] = []
    received_from: TimeIn | None = None
    received_to: TimeIn | None = None
    generated_from: TimeIn | None = None
    generated_to: TimeIn | None = None

    def is_empty(self) -> bool:
        return not any(self.model_dump(exclude_defaults=True).values())

    def stored(self) -> dict[str, Any]:
        """What `replay_jobs.filters` keeps: only the selectors given."""
        return self.model_dump(mode="json", exclude_defaults=True)


class ReplayRequest(ReplayFilters):
    """`POST /v1/admin/replay`. With no selector `all` must be true, so nobody replays everything by
    accident."""

    all: bool = False
    dry_run: bool = False
    sample: int = Field(10, ge=0, le=100)
    rate: float = Field(DEFAULT_REPLAY_RATE, ge=0)
    """Events per second; 0 = as fast as the queue's backlog limit allows."""
    max_backlog: int = Field(DEFAULT_MAX_BACKLOG, ge=1)

    def filters(self) -> ReplayFilters:
        return ReplayFilters.model_validate(self.model_dump(include=set(ReplayFilters.model_fields)))

    @model_validator(mode="after")
    def _something_selected(self) -> ReplayRequest:
        if self.filters().is_empty() and not self.all:
            raise ValueError("no selector given: pass all=true to replay every stored event")
        return self


class DryRunOut(ApiModel):
    dry_run: Literal[True] = True
    count: int
    """Events the replay would enqueue."""
    pruned: int
    """Selected events whose body retention removed: they cannot be replayed."""
    sample: list[EventOut]


class ReplayJobOut(ApiModel):
    id: str
    status: JobStatus
    filters: dict[str, Any]
    total: int
    """Events selected when the job was created."""
    done: int
    """Events enqueued so far."""
    folded: int
    """Replayed events a worker has handled so far."""
    dead_lettered: int
    """Replayed events that exhausted their retries (see /v1/admin/dead-letters)."""
    created_at: UtcTime
    finished_at: UtcTime | None
    error: str | None


class DeadLetterOut(ApiModel):
    id: str
    event_id: str | None
    event_type: str | None
    company_id: str | None
    connection_id: str | None
    attempts: int
    last_error: str | None
    dead_at: UtcTime
    queue: str
    actor: str
    replay: bool


class DeadLetterDetail(DeadLetterOut):
    traceback: str | None


class RedriveRequest(RequestBody):
    """`POST /v1/admin/dead-letters/redrive`: `ids` (dead-letter or event ids) or `all: true`."""

    ids: list[str] = []
    all: bool = False

    @model_validator(mode="after")
    def _something_selected(self) -> RedriveRequest:
        if not self.ids and not self.all:
            raise ValueError("give ids, or all=true to redrive every dead letter")
        return self


class RedriveOut(ApiModel):
    redriven: int
    ids: list[str]
    """The dead-letter ids moved back onto the queue."""
    event_ids: list[str | None]


class QueueOut(ApiModel):
    queue: str
    depth: int
    """Messages waiting to be taken by a worker (one message may carry many events)."""
    oldest_age_seconds: float | None
    """Seconds since the oldest waiting message was enqueued; null when none waits."""
    dead_letters: int


class QueuesOut(ApiModel):
    items: list[QueueOut]


# Answers their handlers build as plain dicts: these models describe them in the OpenAPI document, and the
# schema-driven API tests check each handler still answers this shape.


class HealthOut(ApiModel):
    status: Literal["ok"]


class ReadyOut(ApiModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
    """Each dependency (`database`, `redis`): `ok`, or `unavailable: <reason>`."""


class StreamStatusOut(ApiModel):
    clients: int
    buffered: int
    overflows: int
    reader: Literal["running", "stopped"]
    position: str | None
    tasks: int


class DeadLetterPage(ApiModel):
    items: list[DeadLetterOut]
    next_cursor: str | None
    total: int


class PurgeOut(ApiModel):
    purged: int
