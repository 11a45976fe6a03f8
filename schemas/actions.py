"""The JSON objects of the actions API: an audit record, what an action answers with, and a fresh link."""

from __future__ import annotations

from schemas.api import ApiModel, ConnectionOut, SyncOut, UtcTime


class AuditOut(ApiModel):
    id: int
    at: UtcTime
    """When Synctrack sent the request to Codat."""
    actor: str | None
    action: str
    """`refresh`, `unlink`, `delete`, `reconnect` or `revoke_token`."""
    company_id: str
    connection_id: str | None
    data_type: str | None
    """For a refresh of one data type; null for a refresh of everything."""
    result: str
    """`accepted` (Codat took it), `failed` (Codat refused or could not be reached, or Synctrack refused it
    before asking, e.g. a connection that needs no re-linking; nothing changed) or `rate_limited` (the company's
    tokens had taken `SYNCTRACK_ACTIONS_PER_MINUTE` actions; Codat was not called)."""
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


class ReconnectOut(ApiModel):
    """`POST /v1/connections/{connection_id}/reconnect`: the link Codat issued for the connection just now. It works
    once and expires after a day, so it is never stored: send the customer to it now, and ask again next time."""

    connection_id: str
    company_id: str
    link_url: str
    """Codat's `linkUrl` exactly as it answered (it may carry a query string such as `?otp=…`)."""
    fetched_at: UtcTime
    """When Codat answered."""
