"""The import of an existing Codat account, as the admin API takes and shows it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from schemas.api import ApiModel, RequestBody, UtcTime
from schemas.ids import ID_SYNTAX, is_valid_id

ImportStatus = Literal["pending", "running", "completed", "interrupted", "failed"]

DEFAULT_CONCURRENCY = 4
"""Companies read from Codat at once."""
MAX_LOOKBACK_HOURS = 24 * 365


class ImportRequest(RequestBody):
    """`POST /v1/admin/imports`: every company Codat lists, or only `company_id`; pull-operation history
    back `lookback_hours` (default `SYNCTRACK_RECONCILE_LOOKBACK_HOURS`)."""

    company_id: list[str] = Field(default_factory=list, max_length=10_000)
    lookback_hours: float | None = Field(None, gt=0, le=MAX_LOOKBACK_HOURS)

    @field_validator("company_id")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        # Each id goes into Codat's paths: one outside the id syntax is refused here, before any call.
        cleaned = [ident.strip() for ident in value]
        if not all(is_valid_id(ident) for ident in cleaned):
            raise ValueError(f"each company_id must be a company id: {ID_SYNTAX}")
        return list(dict.fromkeys(cleaned))


class ImportFailure(ApiModel):
    company_id: str
    error: str


class ImportJobOut(ApiModel):
    id: str
    status: ImportStatus
    """`interrupted`: a `running` job no runner holds any more (resume it)."""
    total: int
    """Companies found (listed by Codat, or named)."""
    done: int
    """Companies imported."""
    failed: int
    """Companies that failed (listed in `errors`; a resume retries them)."""
    folded: int
    """Facts that differed from the ledger and were folded: 0 when a second run finds nothing new."""
    connections: int
    syncs: int
    """Pull operations folded as syncs."""
    company_ids: list[str] | None
    lookback_hours: float
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
    error: str | None
    """Why the job itself failed (Codat's list unreadable, the API key refused)."""
    errors: list[ImportFailure]
    """The companies that failed, with their reason (at most 100)."""
