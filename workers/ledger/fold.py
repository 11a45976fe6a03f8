"""The fold: how one normalised event changes the ledger. Pure: no I/O, no clock. Any order of a set of events,
with duplicates, gives the same ledger: every field is a register ordered by a stamp ``(time, rank, event id)``, a
min or max of times, or a set of syncs keyed by a stable id where a result beats a request. A request opens an active
sync, which the first result of its data type (any, for ``*``) at or after it closes, whichever arrives first."""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy
from dataclasses import dataclass, field, replace
from datetime import datetime
from operator import attrgetter
from typing import Literal, Protocol

from schemas.events import ANY_DATA_TYPE, ConnectionFacts, Event, SyncFact
from schemas.statuses import connection_status_rank, outcome_rank, phase_of
from workers.ledger.rows import OPEN_PHASES, CompanyRow, ConnectionRow, DataTypeRow, SyncRow, column_names

ChangeKind = Literal[
    "connection.updated", "connection.initial_read_completed", "sync.started", "sync.completed", "sync.failed"
]

SOURCE_PRECEDENCE = {"webhook": 0, "reconcile": 1, "action": 2}
"""A sync keeps the most deliberate origin that reported it: an action beats a webhook."""

VISIBLE_FIELDS = tuple(
    name for name in column_names(ConnectionRow) if name not in ("id", "company_id") and not name.endswith("_stamp")
)
"""What the API shows of a connection: a change to any of them is announced."""
_visible = attrgetter(*VISIBLE_FIELDS)


@dataclass(frozen=True, slots=True)
class Change:
    """Something a dashboard should hear about; `sync` is a snapshot of the row at that moment."""

    kind: ChangeKind
    connection_id: str
    sync: SyncRow | None = None
    event_id: str = ""


@dataclass(slots=True)
class ConnectionSlice:
    """The part of the ledger one event can touch for one connection: its row, the data types the event names, its
    open syncs and the syncs the event keys. The fold edits them in place and lists sync ids to delete."""

    connection: ConnectionRow
    data_types: dict[str, DataTypeRow] = field(default_factory=dict)
    syncs: dict[str, SyncRow] = field(default_factory=dict)
    deleted_syncs: set[str] = field(default_factory=set)
    purge_history: bool = False
    company_deleted_at: datetime | None = None
    """When the connection's company was deleted: the connection is deleted then too."""


def stamp(at: datetime, rank: int, event_id: str) -> str:
    """A text stamp whose order is time (wall-clock digits, microseconds always written), then rank, then event id."""
    return f"{at.replace(tzinfo=None).isoformat(timespec='microseconds')}|{rank:02d}|{event_id}"


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def fold_company(company: CompanyRow, event: Event) -> bool:
    """Apply `event` to its company's row; return whether anything changed."""
    before = (company.name, company.name_stamp, company.deleted_at)
    if event.company_name:
        candidate = stamp(event.generated_at, 0, event.id)
        if candidate > company.name_stamp:
            company.name, company.name_stamp = event.company_name, candidate
            company.description, company.tags = event.company_description, event.company_tags
    if event.company_deleted:
        company.deleted_at = _min(company.deleted_at, event.generated_at)
    return before != (company.name, company.name_stamp, company.deleted_at)


def fold(state: ConnectionSlice, event: Event) -> list[Change]:
    """Apply `event` to one connection's slice; return the changes worth announcing."""
    conn = state.connection
    before = _visible(conn)
    had_initial_read = conn.initial_read_completed_at is not None
    changes: list[Change] = []
    if event.company_id and not conn.company_id:
        conn.company_id = event.company_id
    if event.company_deleted and event.company_id == conn.company_id:
        state.company_deleted_at = _min(state.company_deleted_at, event.generated_at)
    if state.company_deleted_at is not None:
        conn.deleted_at = _min(conn.deleted_at, state.company_deleted_at)
    for facts in event.connections:
        if facts.id == conn.id:
            _fold_connection(conn, facts, event)
    for fact in event.syncs:
        if fact.connection_id == conn.id:
            fold_sync = _fold_request if phase_of(fact.status) == "active" else _fold_result
            changes.extend(fold_sync(state, fact, event))
    if event.initial_read and any(fact.connection_id == conn.id for fact in event.syncs):
        # Kept even for a deleted connection, like the other times: min does not care when the deletion arrived.
        conn.initial_read_completed_at = _min(conn.initial_read_completed_at, event.generated_at)
    if conn.deleted_at is not None:
        state.purge_history = True
        state.data_types.clear()
        state.deleted_syncs.update(state.syncs)
        state.syncs.clear()
    if _visible(conn) != before:
        changes.insert(0, Change("connection.updated", conn.id, None, event.id))
    if not had_initial_read and conn.initial_read_completed_at is not None:
        changes.append(Change("connection.initial_read_completed", conn.id, None, event.id))
    return changes


def _fold_connection(conn: ConnectionRow, facts: ConnectionFacts, event: Event) -> None:
    at = event.generated_at
    if facts.deleted:
        conn.deleted_at = _min(conn.deleted_at, at)
    if facts.status is not None:
        candidate = stamp(at, connection_status_rank(facts.status), event.id)
        if candidate > conn.status_stamp:
            conn.status, conn.status_stamp = facts.status, candidate
        if facts.status == "Linked":
            conn.linked_at = _min(conn.linked_at, at)
            if facts.linked:
                conn.last_linked_at = _max(conn.last_linked_at, at)
        elif facts.status in ("Unlinked", "Deauthorized"):
            conn.disconnected_at = _max(conn.disconnected_at, at)
    conn.created_at = _min(conn.created_at, facts.created_at)
    if facts.link_failure is not None:
        candidate = stamp(at, 0, event.id)
        if candidate > conn.last_link_failure_stamp:
            failure = facts.link_failure
            conn.last_link_failure_stamp, conn.last_link_failure_at = candidate, at
            conn.last_link_failure = {
                "status_code": failure.status_code,
                "status_text": failure.status_text,
                "message": failure.message,
            }
    if facts.platform_name is not None:
        # A full connection object: its fields win or lose together.
        candidate = stamp(at, 0, event.id)
        if candidate > conn.details_stamp:
            conn.details_stamp = candidate
            conn.platform_key = facts.platform_key
            conn.platform_name = facts.platform_name
            conn.source_type = facts.source_type
            conn.link_url = facts.link_url
            conn.errors = list(facts.errors) if facts.errors is not None else None
            conn.connection_info = dict(facts.metadata) if facts.metadata is not None else None
    elif facts.platform_key is not None and not conn.details_stamp:
        # Legacy alerts only know the platform key; the smallest wins so order cannot matter.
        conn.platform_key = min(conn.platform_key or facts.platform_key, facts.platform_key)


def _closed_by_result(state: ConnectionSlice, data_type: str, requested_at: datetime) -> bool:
    if data_type == ANY_DATA_TYPE:
        last = state.connection.last_sync_at
    else:
        row = state.data_types.get(data_type)
        last = row.last_sync_at if row else None
    return last is not None and last >= requested_at


def _fold_request(state: ConnectionSlice, fact: SyncFact, event: Event) -> list[Change]:
    conn = state.connection
    requested_at = fact.requested_at or event.generated_at
    request_stamp = stamp(requested_at, 0, event.id)
    existing = state.syncs.get(fact.key)
    if existing is not None:
        # A request never changes a result. Of two requests for one key the latest wins: the key stays
        # open while its latest request is unanswered, which is what closing by time needs.
        if existing.phase in OPEN_PHASES:
            if request_stamp > existing.stamp:
                existing.stamp, existing.event_id, existing.status = request_stamp, event.id, fact.status
                existing.phase = "active"
                existing.requested_at = existing.sort_at = requested_at
            _keep_source(existing, event.source)
        return []
    if conn.deleted_at is not None or _closed_by_result(state, fact.data_type, requested_at):
        return []
    row = _new_sync(state, fact, "active", requested_at, event)
    row.stamp, row.requested_at = request_stamp, requested_at
    return [Change("sync.started", conn.id, copy(row), event.id)]


def _fold_result(state: ConnectionSlice, fact: SyncFact, event: Event) -> list[Change]:
    conn = state.connection
    at = event.generated_at
    rank = outcome_rank(fact.status)
    result_stamp = stamp(at, rank, event.id)
    phase = phase_of(fact.status)
    changes: list[Change] = []

    # Connection-level summary: kept even for a deleted connection, since min/max do not care
    # when the deletion arrived.
    conn.last_sync_at = _max(conn.last_sync_at, at)
    if result_stamp > conn.last_sync_stamp:
        conn.last_sync_stamp, conn.last_sync_status = result_stamp, fact.status
    if phase == "succeeded":
        conn.first_sync_at = _min(conn.first_sync_at, at)
        conn.last_successful_sync_at = _max(conn.last_successful_sync_at, at)
    if conn.deleted_at is not None:
        return changes

    _fold_data_type(state, fact, event, result_stamp)
    row = state.syncs.get(fact.key)
    if row is None or row.phase in OPEN_PHASES:
        # A result replaces a request of the same key whole: only results say what a result row holds.
        row = _new_sync(state, fact, phase, at, event)
    newer = result_stamp > row.stamp
    if newer:
        row.status, row.phase, row.stamp, row.data_type = fact.status, phase, result_stamp, fact.data_type
        row.completed_at = row.sort_at = at
        row.requested_at = fact.requested_at
        row.issues = list(fact.issues) if fact.issues is not None else None
        row.event_id = event.id
    _keep_source(row, event.source)
    if fact.records_modified:
        row.records_modified = True
    elif row.records_modified is None and fact.records_modified is not None:
        row.records_modified = False
    if newer:
        # Announced once every field is written, so the stream shows the row the API will.
        changes.append(Change(_finish_kind(phase), conn.id, copy(row), event.id))

    for open_row in [s for s in state.syncs.values() if s.phase in OPEN_PHASES and s.id != fact.key]:
        if open_row.data_type in (fact.data_type, ANY_DATA_TYPE) and (open_row.requested_at or at) <= at:
            del state.syncs[open_row.id]
            state.deleted_syncs.add(open_row.id)
            # A result also ends what the stale check wrote of a sync Codat was still running.
            closed = replace(open_row, status=fact.status, phase=phase, completed_at=at, delayed=False)
            closed.codat_status = closed.next_check_at = closed.check_wait_seconds = None
            changes.append(Change(_finish_kind(phase), conn.id, closed, event.id))
    return changes


def _fold_data_type(state: ConnectionSlice, fact: SyncFact, event: Event, result_stamp: str) -> None:
    at = event.generated_at
    phase = phase_of(fact.status)
    row = state.data_types.get(fact.data_type)
    if row is None:
        row = DataTypeRow(
            connection_id=state.connection.id,
            data_type=fact.data_type,
            company_id=state.connection.company_id,
            status=fact.status,
            phase=phase,
        )
        state.data_types[fact.data_type] = row
    if result_stamp > row.stamp:
        row.stamp, row.status, row.phase = result_stamp, fact.status, phase
        row.records_modified = fact.records_modified
    row.last_sync_at = _max(row.last_sync_at, at)
    if phase == "succeeded":
        row.last_successful_sync_at = _max(row.last_successful_sync_at, at)
        row.first_successful_sync_at = _min(row.first_successful_sync_at, at)


def _new_sync(state: ConnectionSlice, fact: SyncFact, phase: str, sort_at: datetime, event: Event) -> SyncRow:
    """A new row for the fact's key, put in the slice."""
    conn = state.connection
    row = SyncRow(
        id=fact.key,
        company_id=conn.company_id,
        connection_id=conn.id,
        data_type=fact.data_type,
        status=fact.status,
        phase=phase,
        sort_at=sort_at,
        source=event.source,
        event_id=event.id,
    )
    state.syncs[row.id] = row
    state.deleted_syncs.discard(row.id)
    return row


def _keep_source(row: SyncRow, source: str) -> None:
    if SOURCE_PRECEDENCE[source] > SOURCE_PRECEDENCE.get(row.source, 0):
        row.source = source


def _finish_kind(phase: str) -> ChangeKind:
    return "sync.failed" if phase == "failed" else "sync.completed"


class Ledger(Protocol):
    """Where the rows of a ledger live (SQL: `workers.ledger.store`; memory: `workers.ledger.memory`): it hands out
    the slices `fold_batch` folds, and takes them back."""

    def fold_companies(self, events: Sequence[Event]) -> None:
        """Fold each event into its company's row (`fold_company`), creating the companies that are new."""

    def company_connections(self, company_ids: set[str]) -> dict[str, list[str]]:
        """Every connection held of each company, in id order (what a `company.deleted` deletes)."""

    def company_deletions(self, company_ids: set[str]) -> dict[str, datetime]:
        """When each of these companies was deleted, for those that were."""

    def load_slices(self, wanted: dict[str, str], events: Sequence[Event]) -> dict[str, ConnectionSlice]:
        """The `ConnectionSlice` of each wanted connection (`id -> company`), created if new."""

    def save_slices(self, slices: dict[str, ConnectionSlice]) -> None:
        """Keep what the fold left (a purged connection loses its syncs and data types)."""


def fold_batch(ledger: Ledger, events: Sequence[Event]) -> tuple[list[Change], dict[str, ConnectionSlice]]:
    """Fold the `known` of `events`, in order, into `ledger`: the changes, and the slices to render them from. A
    `company.deleted` folds every connection held of its company (one new in the batch, by `company_deleted_at`)."""
    events = [e for e in events if e.known]
    ledger.fold_companies(events)
    wanted: dict[str, str] = {}
    for event in events:
        for cid in event.connection_ids:
            wanted.setdefault(cid, event.company_id or "")
    members = ledger.company_connections({e.company_id for e in events if e.company_deleted and e.company_id})
    for company_id, ids in members.items():
        for cid in ids:
            wanted.setdefault(cid, company_id)
    if not wanted:
        return [], {}
    slices = ledger.load_slices(wanted, events)
    deletions = ledger.company_deletions({s.connection.company_id for s in slices.values()})
    for state in slices.values():
        state.company_deleted_at = deletions.get(state.connection.company_id)
    changes: list[Change] = []
    for event in events:
        targets = members.get(event.company_id or "", []) if event.company_deleted else event.connection_ids
        for cid in targets:
            changes.extend(fold(slices[cid], event))
    ledger.save_slices(slices)
    return changes, slices
