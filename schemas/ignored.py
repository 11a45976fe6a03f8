"""Why an event Codat documents does not change the ledger: the reason stored in its `error`.

Outcome `ignored` is a genuine Codat payload carrying no fact Synctrack keeps (`failed` is for input that is not
one); each says which case it is, so an operator reading `GET /v1/events?outcome=ignored` never has to guess.
"""

from __future__ import annotations

RATE_LIMIT = "a client-wide rate-limit notice: it names no company or connection"
WRITE = "a push (write) to the platform: Synctrack tracks reads and connections, not writes"
EXPENSE_SYNC = "a Sync for Expenses result (Data.syncId): it belongs to no data connection Synctrack tracks"
SYNC_CONNECTION_DELETED = (
    "Sync Connection Deleted without a DataConnectionId: it names no data connection, so there is nothing to delete"
)
PRODUCT = "a change to the company's Codat products: Synctrack does not track products"

LEGACY: dict[str, str] = {
    "Rate Limit Reached": RATE_LIMIT,
    "Rate Limit Reset": RATE_LIMIT,
    "Push Operation Status Changed()": WRITE,
    "Push Operation Timed Out": WRITE,
    "Sync Completed": EXPENSE_SYNC,
    "Sync Failed": EXPENSE_SYNC,
}


def current_reason(event_type: str) -> str:
    """Why a current-envelope event type Synctrack does not fold is ignored."""
    if event_type.startswith("client.rateLimit."):
        return RATE_LIMIT
    if event_type.startswith("company.product"):
        return PRODUCT
    if ".write." in event_type or event_type.startswith("push"):
        return WRITE
    return f"Synctrack does not track {event_type!r} events: they say nothing about connections or syncs"


def legacy_reason(rule: str) -> str:
    """Why a legacy alert Synctrack does not fold is ignored."""
    return LEGACY.get(rule) or f"Synctrack does not track {rule!r} alerts: they say nothing about connections or syncs"
