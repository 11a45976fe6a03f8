"""Missed webhooks (table `missed_webhooks`): results reconciliation folded that no webhook had reported, recorded
in `workers.codat.reconcile.apply_view`'s transaction, kept by dataset id and never removed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Engine, Table, func, tuple_
from sqlalchemy import select as sql_select
from sqlmodel import Session, col, select

from schemas.codat import PullOperation
from workers.ledger.bulk_sql import chunked, insert_rows
from workers.ledger.freshness_state import source_type_label
from workers.ledger.tables import CONNECTIONS, MissedWebhook

MISSED: Table = MissedWebhook.__table__  # type: ignore[attr-defined]


def record_missed(session: Session, operations: Iterable[PullOperation], found_at: datetime) -> int:
    """Record the finished `operations` (folded, unknown to the ledger) as missed webhooks; return how many."""
    finished = [op for op in operations if op.finished]
    if not finished:
        return 0
    ids = sorted({op.connection_id for op in finished})
    source_types: dict[str, str | None] = {}
    for chunk in chunked(ids):
        query = sql_select(CONNECTIONS.c.id, CONNECTIONS.c.source_type).where(CONNECTIONS.c.id.in_(chunk))
        source_types.update(session.execute(query).all())
    rows = [
        {
            "dataset_id": op.id,
            "company_id": op.company_id,
            "connection_id": op.connection_id,
            "data_type": op.data_type,
            "status": op.status,
            "completed_at": op.completed,
            "found_at": found_at,
            "source_type": source_type_label(source_types.get(op.connection_id)),
        }
        for op in finished
    ]
    insert_rows(session, MISSED, rows, conflict=["dataset_id"], update_columns=[])
    return len(rows)


def count_missed(engine: Engine) -> dict[str, int]:
    """Missed webhooks by source type, ever recorded."""
    query = sql_select(MISSED.c.source_type, func.count()).group_by(MISSED.c.source_type)
    with engine.connect() as conn:
        return {str(source_type): int(n) for source_type, n in conn.execute(query)}


def missed_page(
    session: Session, since: datetime | None, limit: int, after: tuple[datetime, str] | None = None
) -> list[MissedWebhook]:
    """Up to `limit` + 1 records found at or after `since`, newest first, after the position `after`
    (`found_at`, `dataset_id`)."""
    query = select(MissedWebhook)
    if since is not None:
        query = query.where(col(MissedWebhook.found_at) >= since)
    if after is not None:
        query = query.where(tuple_(col(MissedWebhook.found_at), col(MissedWebhook.dataset_id)) < after)
    query = query.order_by(col(MissedWebhook.found_at).desc(), col(MissedWebhook.dataset_id).desc()).limit(limit + 1)
    return list(session.exec(query).all())
