"""Rebuild the ledger from the stored raw events into a fresh schema, and compare ledgers.

`rebuild_ledger` folds every stored event that still has its body, in any order, into an empty target: in memory
with one bulk write at the end (`workers.ledger.memory`) or through the workers' SQL store, a batch per
transaction. `dump_ledger` makes a ledger comparable and `diff_dumps` lists every difference, labelling what a
rebuild cannot know: what the stale check writes by the clock and Codat's answers (read as the fold leaves it),
and facts without a replayable raw event (actions, reconciliation, erased bodies).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, select, text, tuple_
from sqlmodel import Session, SQLModel, col
from sqlmodel import select as sql_select

from schemas.events import Event, InvalidEnvelope, parse_event
from workers.ledger.memory import MemoryLedger
from workers.ledger.store import fold_events
from workers.ledger.tables import Company, Connection, DataTypeState, Sync, WebhookEvent
from workers.runtime.db import make_engine, normalise_url

LedgerDump = dict[str, dict[str, dict[str, Any]]]
Order = Literal["received", "generated", "shuffled"]

LEDGER_MODELS: dict[str, type[SQLModel]] = {
    "companies": Company,
    "connections": Connection,
    "data_types": DataTypeState,
    "syncs": Sync,
}
REBUILD_SCHEMA = "synctrack_rebuild"
PAGE = 2_000


def _key(table: str, row: dict[str, Any]) -> str:
    return f"{row['connection_id']}/{row['data_type']}" if table == "data_types" else str(row["id"])


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


STALE_CHECK_DEFAULTS = {"delayed": False, "codat_status": None, "next_check_at": None, "check_wait_seconds": None}
"""The columns of a sync only the stale-sync job writes, as the fold leaves them."""


def _before_the_stale_check(values: dict[str, Any]) -> dict[str, Any]:
    phase = "active" if values.get("phase") == "stale" else values.get("phase")
    return {"phase": phase, **STALE_CHECK_DEFAULTS}


def dump_ledger(engine: Engine, *, stale_as_active: bool = True) -> LedgerDump:
    """The ledger tables as ``{table: {row key: {column: value}}}`` with canonical values (UTC ISO times,
    sorted JSON), so two ledgers are equal exactly when their dumps are. Row keys: the id, or
    ``connection/data type`` for data types."""
    dump: LedgerDump = {}
    with engine.connect() as conn:
        for name, model in LEDGER_MODELS.items():
            table = model.__table__  # type: ignore[attr-defined]
            rows: dict[str, dict[str, Any]] = {}
            for row in conn.execute(select(table)).mappings():
                values = {column: _canonical(value) for column, value in row.items()}
                if stale_as_active and name == "syncs":
                    values.update(_before_the_stale_check(values))
                rows[_key(name, values)] = values
            dump[name] = dict(sorted(rows.items()))
    return dump


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: str
    column: str | None
    """None when the whole row exists on one side only."""
    live: Any
    rebuilt: Any
    note: str | None = None

    def __str__(self) -> str:
        where = f"{self.table}[{self.key}]" + (f".{self.column}" if self.column else "")
        if self.column is None:
            text_ = "only in the live ledger" if self.rebuilt is None else "only in the rebuilt ledger"
        else:
            text_ = f"live={self.live!r} rebuilt={self.rebuilt!r}"
        return f"{where}: {text_}" + (f"  ({self.note})" if self.note else "")


def diff_dumps(live: LedgerDump, rebuilt: LedgerDump, replayable: set[str] | None = None) -> list[Difference]:
    """Every difference between two dumps. With `replayable` (the ids of stored events that have a
    body), a difference whose live row came from an event outside that set is labelled as such."""
    found: list[Difference] = []
    for table in LEDGER_MODELS:
        left, right = live.get(table, {}), rebuilt.get(table, {})
        for key in sorted(left.keys() | right.keys()):
            a, b = left.get(key), right.get(key)
            note = _note(a, replayable) if a is not None else None
            if a is None or b is None:
                found.append(Difference(table, key, None, a, b, note))
                continue
            for column in sorted(a.keys() | b.keys()):
                if a.get(column) != b.get(column):
                    found.append(Difference(table, key, column, a.get(column), b.get(column), note))
    return found


def _note(row: dict[str, Any], replayable: set[str] | None) -> str | None:
    if row.get("source") in ("action", "reconcile"):
        return f"from an {row['source']}: no raw event to rebuild it from"
    if replayable is None:
        return None
    ids = [row.get("event_id")] + [
        str(value).split("|", 2)[2] for column, value in row.items() if column.endswith("stamp") and value
    ]
    outside = sorted({i for i in ids if i and i not in replayable})
    return f"live value from {', '.join(outside)}: not a replayable stored webhook" if outside else None


@dataclass(slots=True)
class RebuildReport:
    events: int = 0
    """Stored events read (with a body)."""
    folded: int = 0
    ignored: int = 0
    """Event types Synctrack does not fold."""
    failed: int = 0
    """Bodies the fold cannot parse (outcome `failed` when stored)."""
    pruned: int = 0
    """Stored events without a body (retention, erasure): they cannot be rebuilt."""
    rows: int = 0
    seconds: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def stored_events(engine: Engine, order: Order = "received", seed: int = 0) -> Iterator[tuple[str, str, datetime]]:
    """(id, body, received_at) of every stored event with a body, page by page, in `order`: receipt
    time, generation time (receipt time for events never parsed) or a seeded shuffle."""
    has_body = col(WebhookEvent.body).is_not(None)
    sort: Any = col(WebhookEvent.received_at)
    if order == "generated":
        sort = func.coalesce(col(WebhookEvent.generated_at), col(WebhookEvent.received_at))
    base = sql_select(WebhookEvent.id, WebhookEvent.body, WebhookEvent.received_at, sort).where(has_body)
    if order == "shuffled":
        with Session(engine) as session:
            ids = list(session.exec(sql_select(WebhookEvent.id).where(has_body)).all())
        random.Random(seed).shuffle(ids)
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            with Session(engine) as session:
                found = {row[0]: row for row in session.exec(base.where(col(WebhookEvent.id).in_(chunk))).all()}
            yield from ((i, found[i][1] or "", found[i][2]) for i in chunk if i in found)
        return
    last: tuple[Any, str] | None = None
    while True:
        query = base
        if last is not None:
            query = query.where(tuple_(sort, col(WebhookEvent.id)) > tuple_(last[0], last[1]))
        with Session(engine) as session:
            rows = session.exec(query.order_by(sort, col(WebhookEvent.id)).limit(PAGE)).all()
        yield from ((row[0], row[1] or "", row[2]) for row in rows)
        if len(rows) < PAGE:
            return
        last = (rows[-1][3], rows[-1][0])


def replayable_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(sql_select(WebhookEvent.id).where(col(WebhookEvent.body).is_not(None))).all())


def rebuild_ledger(
    source: Engine,
    target: Engine,
    *,
    mode: Literal["memory", "store"] = "memory",
    order: Order = "received",
    batch: int = 1_000,
    seed: int = 0,
) -> RebuildReport:
    """Fold every stored event of `source` into the empty ledger of `target`."""
    report = RebuildReport()
    started = time.perf_counter()
    with Session(source) as session:
        report.pruned = len(session.exec(sql_select(WebhookEvent.id).where(col(WebhookEvent.body).is_(None))).all())
    memory = MemoryLedger() if mode == "memory" else None
    pending: list[Event] = []
    for event_id, body, received_at in stored_events(source, order, seed):
        report.events += 1
        try:
            event = parse_event(body, event_id, received_at)
        except InvalidEnvelope:
            report.failed += 1
            continue
        if not event.known:
            report.ignored += 1
            continue
        report.folded += 1
        pending.append(event)
        if len(pending) >= batch:
            _fold(memory, target, pending)
            pending = []
    if pending:
        _fold(memory, target, pending)
    if memory is not None:
        report.rows = memory.write(target)
    report.seconds = time.perf_counter() - started
    return report


def _fold(memory: MemoryLedger | None, target: Engine, events: list[Event]) -> None:
    """One batch into the memory ledger, or into `target` in one transaction of its own."""
    if memory is not None:
        memory.fold(events)
        return
    with Session(target) as session, session.begin():
        fold_events(session, events)


def fresh_target(live_url: str, into: str | None = None) -> tuple[Engine, str]:
    """An engine on an empty ledger schema for a rebuild, and a description of where it is.

    `into` names a database URL to use; by default a live PostgreSQL gets the schema
    ``synctrack_rebuild`` in the same database (dropped and created again), a live SQLite gets
    ``<live file>.rebuild`` next to it (replaced).
    """
    url = normalise_url(into or live_url)
    if url.startswith("sqlite"):
        if into is None:
            path = url.removeprefix("sqlite:///") + ".rebuild"
            url = f"sqlite:///{path}"
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
        engine = make_engine(url)
        where = path
    elif into is None:
        with make_engine(url).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{REBUILD_SCHEMA}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{REBUILD_SCHEMA}"'))
        engine = make_engine(url, connect_args={"options": f"-csearch_path={REBUILD_SCHEMA}"})
        where = f"schema {REBUILD_SCHEMA} of {url.split('@')[-1]}"
    else:
        engine = make_engine(url)
        where = url.split("@")[-1]
    tables = [model.__table__ for model in LEDGER_MODELS.values()]  # type: ignore[attr-defined]
    SQLModel.metadata.drop_all(engine, tables=tables)
    SQLModel.metadata.create_all(engine, tables=tables)
    return engine, where


APPLY_MARGIN = timedelta(minutes=5)
"""Events processed this long before a rebuild started are folded again when it is applied, in case
their transaction committed after the rebuild had read past them. Folding twice is harmless."""


def apply_rebuilt(live: Engine, target: Engine, rebuild_started_at: datetime) -> int:
    """Replace the live ledger with the rebuilt one, in one transaction that holds off the workers, then
    fold again the events processed since the rebuild started (they may be missing from it).

    Returns how many events were folded again. Dashboards do not hear about the swap: they pick it up
    on their next read.
    """
    since = rebuild_started_at - APPLY_MARGIN
    with Session(live) as session, session.begin():
        if live.dialect.name == "postgresql":
            session.execute(text("LOCK TABLE companies, connections, data_types, syncs IN SHARE ROW EXCLUSIVE MODE"))
        for model in reversed(LEDGER_MODELS.values()):
            session.execute(delete(model))
        with target.connect() as source:
            for model in LEDGER_MODELS.values():
                table = model.__table__  # type: ignore[attr-defined]
                result = source.execute(select(table)).mappings()
                while chunk := [dict(row) for row in result.fetchmany(PAGE)]:
                    session.execute(insert(table), chunk)
        recent = sql_select(WebhookEvent).where(
            col(WebhookEvent.processed_at) >= since, col(WebhookEvent.body).is_not(None)
        )
        events = []
        for row in session.exec(recent).all():
            try:
                event = parse_event(row.body or "", row.id, row.received_at)
            except InvalidEnvelope:
                continue
            if event.known:
                events.append(event)
        for start in range(0, len(events), PAGE):
            fold_events(session, events[start : start + PAGE])
        refolded = len(events)
    return refolded
