"""What "remove completely" erases of a deleted connection beyond what the fold removes: its webhooks' raw bodies.
Each stored event stays as a tombstone, so a redelivery is still recognised as a duplicate."""

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
