"""The stream's own events, as SSE frames: ``snapshot`` (read from the ledger) and ``reset``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from service.stream.subscriber import SLOW_CLIENT, STREAM_INTERRUPTED, TOKEN_EXPIRED, TOKEN_REVOKED, StreamFilter
from workers.ledger.durations import load_timings
from workers.ledger.freshness import DEFAULT_POLICY, FreshnessPolicy
from workers.ledger.tables import Connection, Sync
from workers.ledger.views import connection_out, connection_rows_query, load_assessments, load_companies, sync_out

SNAPSHOT_LIMIT = 10_000  # most connections (and active syncs) a snapshot lists; beyond it, `truncated` is true

RESET_DETAIL = {
    "last_event_id_not_found": "Last-Event-ID is not in the stream (unknown, or older than the retention window)",
    SLOW_CLIENT: "the client read too slowly and its buffer overflowed",
    STREAM_INTERRUPTED: "the change feed was interrupted and changes may have been missed",
}
TOKEN_DETAIL = {
    TOKEN_REVOKED: "the token this stream was opened with has been revoked; the stream ends",
    TOKEN_EXPIRED: "the token this stream was opened with has expired; reconnect with a new token",
}
"""Resets that end a company token's stream: not worth re-reading the state with that token."""


def frame(event_id: str, name: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


def reset_frame(position: str, reason: str) -> bytes:
    detail = TOKEN_DETAIL.get(reason) or RESET_DETAIL.get(reason, reason) + "; re-read the state from the JSON API"
    return frame(position, "reset", {"reason": reason, "detail": detail, "event_id": None})


def load_snapshot(
    engine: Engine, stream_filter: StreamFilter, freshness: FreshnessPolicy = DEFAULT_POLICY
) -> dict[str, Any]:
    """The filtered connections and active syncs as the JSON API shows them, and the companies they belong to."""
    connections = connection_rows_query().order_by(col(Connection.id)).limit(SNAPSHOT_LIMIT + 1)
    syncs = select(Sync).where(Sync.phase == "active")
    syncs = syncs.order_by(col(Sync.sort_at).desc(), col(Sync.id)).limit(SNAPSHOT_LIMIT + 1)
    if stream_filter.company_ids:
        connections = connections.where(col(Connection.company_id).in_(stream_filter.company_ids))
        syncs = syncs.where(col(Sync.company_id).in_(stream_filter.company_ids))
    if stream_filter.connection_ids:
        connections = connections.where(col(Connection.id).in_(stream_filter.connection_ids))
        syncs = syncs.where(col(Sync.connection_id).in_(stream_filter.connection_ids))
    with Session(engine) as session:
        connection_rows = session.exec(connections).all()
        sync_rows = session.exec(syncs).all()
        timings = load_timings(session, sync_rows[:SNAPSHOT_LIMIT])
        shown = connection_rows[:SNAPSHOT_LIMIT]
        active = {conn.id for conn, _, is_active in shown if is_active}
        assessed = load_assessments(session, [conn for conn, _, _ in shown], active, freshness, datetime.now(UTC))
        companies = load_companies(session, {*stream_filter.company_ids, *(conn.company_id for conn, _, _ in shown)})
    return {
        "companies": [company.model_dump(mode="json") for company in companies[:SNAPSHOT_LIMIT]],
        "connections": [
            connection_out(conn, name, bool(active), assessed[conn.id]).model_dump(mode="json")
            for conn, name, active in shown
        ],
        "syncs": [sync_out(row, timings.get(row.id)).model_dump(mode="json") for row in sync_rows[:SNAPSHOT_LIMIT]],
        "truncated": len(connection_rows) > SNAPSHOT_LIMIT or len(sync_rows) > SNAPSHOT_LIMIT,
        "event_id": None,
    }
