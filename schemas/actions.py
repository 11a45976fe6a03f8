"""The JSON objects of the actions API: an audit record, and what an action answers with."""

from __future__ import annotations

from pydantic import BaseModel

from schemas.api import ConnectionOut, SyncOut, UtcTime


class AuditOut(BaseModel):
    id: int
    at: UtcTime
    """When Synctrack sent the request to Codat."""
    actor: str | None
    action: str
    """`refresh`, `unlink` or `delete`."""
    company_id: str
    connection_id: str | None
    data_type: str | None
    """For a refresh of one data type; null for a refresh of everything."""
    result: str
    """`accepted` (Codat took it), `failed` (Codat refused or could not be reached; nothing changed) or
    `rate_limited` (the company's tokens had taken `SYNCTRACK_ACTIONS_PER_MINUTE` actions; Codat was not called)."""
    codat_status: int | None
    """Codat's HTTP status; null when Codat could not be reached."""
    detail: str | None
    confirmed_by_event_id: str | None
    """The webhook that confirmed the change (read.completed, connection.disconnected/deleted)."""
    confirmed_at: UtcTime | None


class ActionOut(AuditOut):
    """The 202 answer of an action: its audit record plus what changed in the ledger."""

    syncs: list[SyncOut]
    """Syncs the action started (phase `active`, source `action`)."""
    connection: ConnectionOut | None
    """The connection as the ledger holds it after an unlink or delete."""
