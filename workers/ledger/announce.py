"""What a fold announces: its changes, with each changed connection's freshness, and freshness transitions.

Called inside the fold's transaction, after the store wrote the batch. For each connection the batch changed it
judges the freshness at `now`, renders the changes with it and records it (`workers.ledger.freshness_state`);
when that differs from what was last announced, a ``connection.updated`` follows (unless the batch carries one)
and, when `freshness` itself changed, a ``connection.freshness_changed`` — at once, not at the next periodic check.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from schemas.api import ConnectionOut
from workers.ledger.changes import FeedEntry, render_changes
from workers.ledger.fold import Change, ConnectionSlice
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.freshness_state import Transition, record_transitions
from workers.ledger.store import COMPANIES
from workers.ledger.views import connection_out, load_freshness

FRESHNESS_CHANGED = "connection.freshness_changed"


def transition_entries(
    transition: Transition, connection: ConnectionOut, event_id: str | None, *, with_update: bool = True
) -> list[FeedEntry]:
    """The feed entries of one transition: ``connection.updated`` (unless told not to) and, when the
    freshness itself changed, ``connection.freshness_changed``."""
    data: dict[str, Any] = connection.model_dump(mode="json")
    cid, company_id = transition.connection_id, transition.company_id
    entries = []
    if with_update:
        entries.append(FeedEntry("connection.updated", company_id, cid, {**data, "event_id": event_id}))
    if transition.freshness_changed:
        body = {
            "connection": data,
            "previous": transition.previous,
            "current": transition.current.freshness,
            "overdue_data_types": list(transition.current.overdue_data_types),
            "event_id": event_id,
        }
        entries.append(FeedEntry(FRESHNESS_CHANGED, company_id, cid, body))
    return entries


def announce_changes(
    session: Session,
    changes: list[Change],
    slices: dict[str, ConnectionSlice],
    company_names: Mapping[str, str | None],
    policy: FreshnessPolicy,
    now: datetime,
) -> list[FeedEntry]:
    """The feed entries of a fold's changes, freshness included; records freshness transitions."""
    touched = {change.connection_id: slices[change.connection_id].connection for change in changes}
    if not touched:
        return []
    assessed = load_freshness(session, touched.values(), policy, now)
    entries = render_changes(changes, slices, company_names, assessed)
    updated = {entry.connection_id for entry in entries if entry.name == "connection.updated"}
    last_event = {change.connection_id: change.event_id or None for change in changes}
    for transition in record_transitions(session, touched, assessed, now):
        cid = transition.connection_id
        conn = touched[cid]
        active = any(s.phase == "active" for s in slices[cid].syncs.values())
        out = connection_out(conn, company_names.get(conn.company_id), active, transition.current)
        entries += transition_entries(transition, out, last_event[cid], with_update=cid not in updated)
    return entries


def company_names(session: Session, company_ids: set[str]) -> dict[str, str | None]:
    """Each company's name as the ledger holds it now (None for a company it does not hold, or without one)."""
    if not company_ids:
        return {}
    found = session.execute(select(COMPANIES.c.id, COMPANIES.c.name).where(COMPANIES.c.id.in_(sorted(company_ids))))
    return {company_id: None for company_id in company_ids} | {row.id: row.name for row in found}
