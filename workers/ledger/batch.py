"""Fold a batch of events into a ledger: the one driver around the pure fold, for SQL (`workers.ledger.store`) and
memory (`workers.ledger.memory`); a `Ledger` only hands out the slices and takes them back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from schemas.events import Event
from workers.ledger.fold import Change, ConnectionSlice, fold


class Ledger(Protocol):
    """Where the rows of a ledger live, as the driver needs them."""

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
