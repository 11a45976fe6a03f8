"""Rebuild the ledger from the stored raw events into a fresh schema, and compare ledgers.

`rebuild_ledger` folds every stored event that has its body, in any order, into an empty target (in memory, or a
batch per transaction through the SQL store). `diff_dumps` lists every difference between two `dump_ledger`s,
labelling what a rebuild cannot know: the stale check's clock and Codat's answers, facts without a raw event.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, delete, func, insert, select, text
from sqlmodel import Session, SQLModel, col
from sqlmodel import select as sql_select

from schemas.events import Event, InvalidEnvelope, parse_event
from workers.ledger.memory import MemoryLedger
from workers.ledger.store import fold_events
from workers.ledger.tables import Company, Connection, DataTypeState, Sync, WebhookEvent
from workers.runtime.db import make_engine, normalise_url

LedgerDump = dict[str, dict[str, dict[str, Any]]]
Order = Literal["received", "generated", "shuffled"]

LEDGER_MODELS: dict[str, type[SQLModel]] = {str(m.__tablename__): m for m in (Company, Connection, DataTypeState, Sync)}
REBUILD_SCHEMA = "synctrack_rebuild"
PAGE = 2_000
BATCH = 1_000
"""Events per fold (per transaction with `mode="store"`)."""


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


def dump_ledger(engine: Engine, *, stale_as_active: bool = True) -> LedgerDump:
    """The ledger tables as ``{table: {row key: {column: value}}}`` with canonical values (UTC ISO times, sorted
    JSON), so two ledgers are equal exactly when their dumps are. A row's key is its id (data types: `conn/type`)."""
    dump: LedgerDump = {}
    with engine.connect() as conn:
        for name, model in LEDGER_MODELS.items():
            table = model.__table__  # type: ignore[attr-defined]
            rows: dict[str, dict[str, Any]] = {}
            for row in conn.execute(select(table)).mappings():
                values = {column: _canonical(value) for column, value in row.items()}
                if stale_as_active and name == "syncs":
                    phase = "active" if values.get("phase") == "stale" else values.get("phase")
                    values.update(STALE_CHECK_DEFAULTS, phase=phase)
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
    """Every difference between two dumps; with `replayable` (ids of stored events that have a body), one whose
    live row came from an event outside that set is labelled as such."""
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
    """Stored events read (with a body), folded, of types not folded, unparseable, and without a body."""

    events: int = 0
    folded: int = 0
    ignored: int = 0
    failed: int = 0
    pruned: int = 0
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
    with Session(engine) as session:
        ids = list(session.exec(sql_select(WebhookEvent.id).where(has_body).order_by(sort, col(WebhookEvent.id))))
    if order == "shuffled":
        random.Random(seed).shuffle(ids)
    for start in range(0, len(ids), PAGE):
        page = ids[start : start + PAGE]
        query = sql_select(WebhookEvent.id, WebhookEvent.body, WebhookEvent.received_at).where(
            col(WebhookEvent.id).in_(page), has_body
        )
        with Session(engine) as session:
            found = {row[0]: row for row in session.exec(query)}
        yield from ((i, found[i][1] or "", found[i][2]) for i in page if i in found)


def replayable_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(sql_select(WebhookEvent.id).where(col(WebhookEvent.body).is_not(None))).all())


def rebuild_ledger(
    source: Engine,
    target: Engine,
    *,
    mode: Literal["memory", "store"] = "memory",
    order: Order = "received",
    seed: int = 0,
) -> RebuildReport:
    """Fold every stored event of `source` into the empty ledger of `target`."""
    report = RebuildReport()
    started = time.perf_counter()
    with Session(source) as session:
        report.pruned = session.exec(sql_select(func.count()).where(col(WebhookEvent.body).is_(None))).one()
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
        if len(pending) >= BATCH:
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
    """An engine on an empty ledger schema for a rebuild, and where it is: the database URL `into`, else the
    schema ``synctrack_rebuild`` of a live PostgreSQL (created anew) or ``<live file>.rebuild`` beside a SQLite."""
    url = normalise_url(into or live_url)
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///") + ("" if into else ".rebuild")
        url = f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
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
"""Events processed this long before a rebuild started are folded again when it is applied (their transaction may
have committed after the rebuild read past them); folding twice is harmless."""


def apply_rebuilt(live: Engine, target: Engine, rebuild_started_at: datetime) -> int:
    """Replace the live ledger with the rebuilt one in one transaction that holds off the workers, then fold again
    the events processed since the rebuild started; returns how many. Dashboards see the swap on their next read."""
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
        return len(events)
