"""What a fold announces, inside its transaction: its changes with each changed connection's freshness and health,
the transitions of those (`workers.ledger.freshness_state`), then the ``bundle.ready`` events it caused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from schemas.api import ConnectionOut
from workers.ledger.bundles import announce_ready
from workers.ledger.changes import FeedEntry, render_changes
from workers.ledger.durations import DurationMemo, load_timings
from workers.ledger.fold import Change, ConnectionSlice
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.freshness_state import Transition, record_transitions
from workers.ledger.tables import COMPANIES
from workers.ledger.views import connection_out, load_assessments

FRESHNESS_CHANGED = "connection.freshness_changed"


def transition_entries(
    transition: Transition, connection: ConnectionOut, event_id: str | None, *, with_update: bool = True
) -> list[FeedEntry]:
    """``connection.updated`` (unless told not to), then ``connection.freshness_changed`` and
    ``connection.health_changed`` for what itself changed."""
    data: dict[str, Any] = connection.model_dump(mode="json")
    cid, company_id = transition.connection_id, transition.company_id
    entries = []
    if with_update:
        entries.append(FeedEntry("connection.updated", company_id, cid, {**data, "event_id": event_id}))
    for kind, previous, current in transition.changes():
        detail: dict[str, Any] = {"next_action": transition.health.next_action}
        if kind == "freshness_changed":
            detail = {"overdue_data_types": list(transition.current.overdue_data_types)}
        body = {"connection": data, "previous": previous, "current": current, **detail, "event_id": event_id}
        entries.append(FeedEntry(f"connection.{kind}", company_id, cid, body))
    return entries


def announce_changes(
    session: Session,
    changes: list[Change],
    slices: dict[str, ConnectionSlice],
    company_names: Mapping[str, str | None],
    policy: FreshnessPolicy,
    now: datetime,
    durations: DurationMemo | None = None,
) -> list[FeedEntry]:
    """The feed entries of a fold's changes, freshness and health included; records their transitions."""
    touched = {change.connection_id: slices[change.connection_id].connection for change in changes}
    if not touched:
        return []
    active = {cid for cid in touched if any(s.phase == "active" for s in slices[cid].syncs.values())}
    assessed = load_assessments(session, touched.values(), active, policy, now)
    platforms = {cid: state.connection.platform_key for cid, state in slices.items()}
    syncs = [change.sync for change in changes if change.sync is not None]
    timings = load_timings(session, syncs, platforms, durations)
    entries = render_changes(changes, slices, company_names, assessed, timings)
    updated = {entry.connection_id for entry in entries if entry.name == "connection.updated"}
    last_event = {change.connection_id: change.event_id or None for change in changes}
    for transition in record_transitions(session, touched, assessed, now, last_event):
        cid = transition.connection_id
        conn = touched[cid]
        out = connection_out(conn, company_names.get(conn.company_id), cid in active, assessed[cid])
        entries += transition_entries(transition, out, last_event[cid], with_update=cid not in updated)
    return entries + announce_ready(session, changes, now)


def company_names(session: Session, company_ids: set[str]) -> dict[str, str | None]:
    """Each company's name as the ledger holds it now (None when unknown)."""
    if not company_ids:
        return {}
    found = session.execute(select(COMPANIES.c.id, COMPANIES.c.name).where(COMPANIES.c.id.in_(sorted(company_ids))))
    return {company_id: None for company_id in company_ids} | {row.id: row.name for row in found}
