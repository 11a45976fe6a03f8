"""What "remove completely" erases for a deleted connection, beyond what the fold removes.

The fold drops a deleted connection's sync history and data-type state; the raw webhook bodies that
described it are erased here. Each stored event stays as a tombstone (id, type, times, outcome —
as retention leaves it) so a redelivery is still recognised as a duplicate and the audit trail
still shows that something arrived.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from workers.ledger.tables import WebhookEvent


def erase_raw_events(session: Session, connection_id: str) -> int:
    """Erase the stored bodies of every webhook about `connection_id`; returns how many."""
    result = session.execute(
        update(WebhookEvent)
        .where(col(WebhookEvent.connection_id) == connection_id, col(WebhookEvent.body).is_not(None))
        .values(body=None)
        .execution_options(synchronize_session="fetch")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
