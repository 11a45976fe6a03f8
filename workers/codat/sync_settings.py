"""Codat's sync settings: read the client's and each company's `syncSchedule`s, record them, announce what they change.

Freshness thresholds follow Codat's schedules, so they are read at import and reconciliation, for a new company (the
`fetch_sync_settings` actor) and otherwise at most daily (`SETTINGS_JOB`); changed schedules get the connections they
concern judged again (`workers.ledger.reassess`). Without an API key nothing is read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq
from sqlalchemy import Engine
from sqlmodel import Session

from schemas.codat import sync_schedules
from schemas.errors import ErrorCode
from schemas.events import InvalidEnvelope
from schemas.settings import Settings
from workers.codat.client import CodatClient, codat_client
from workers.codat.errors import GIVE_UP, CodatError
from workers.ledger.changes import ChangeFeed
from workers.ledger.freshness import FreshnessPolicy
from workers.ledger.reassess import reassess
from workers.ledger.schedules import companies_due, fetched_at, record_schedules
from workers.runtime.periodic import PeriodicJob
from workers.runtime.redis_queues import OPS_QUEUE

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

log = logging.getLogger("synctrack.codat")

SETTINGS_MAX_AGE = timedelta(days=1)
"""Settings read more recently than this are not read again by the daily job or for a new company."""
SETTINGS_EVERY_SECONDS = 86_400.0
SETTINGS_ACTOR = "fetch_sync_settings"


def _whose(company_id: str | None) -> str:
    return "client" if company_id is None else f"company={company_id}"


def _unread(company_id: str | None, exc: CodatError) -> None:
    log.warning("msg=sync_settings_unread %s error=%s detail=%r", _whose(company_id), exc.code.value, exc.detail)


def record_settings(
    engine: Engine,
    feed: ChangeFeed | None,
    policy: FreshnessPolicy,
    company_id: str | None,
    hours: dict[str, float],
    now: datetime,
) -> bool:
    """Record the schedules read at `now`; when they changed, judge the connections they concern again and
    announce what changed. True when they changed."""
    with Session(engine) as session, session.begin():
        changed = record_schedules(session, company_id, hours, now)
    if changed:
        moved = reassess(engine, feed, policy, now, company_id) if policy.follow_schedules else 0
        log.info(
            "msg=sync_settings_changed %s data_types=%d freshness_changed=%d", _whose(company_id), len(hours), moved
        )
    return changed


async def refresh_settings(
    codat: CodatClient,
    engine: Engine,
    feed: ChangeFeed | None,
    policy: FreshnessPolicy,
    company_id: str | None = None,
    *,
    lock: AbstractAsyncContextManager[object] | None = None,
    quiet: bool = False,
) -> bool:
    """Read and record the client's (`company_id` None) or one company's settings; True when they changed.
    Nothing is read without an API key. `lock` is held while they are recorded (the importer's one writer on
    SQLite). Raises `CodatError`, or (`quiet`: import, reconciliation) logs it and leaves the settings read before."""
    if not policy.follow_schedules:
        return False
    try:
        if company_id is None:
            raw = await codat.client_sync_settings()
        else:
            raw = await codat.company_sync_settings(company_id)
        try:
            hours = sync_schedules(raw)
        except InvalidEnvelope as exc:
            raise CodatError(502, ErrorCode.CODAT_ERROR, f"Codat's sync settings are unreadable: {exc}") from None
    except CodatError as exc:
        if not quiet:
            raise
        _unread(company_id, exc)
        return False
    async with lock or nullcontext():
        return await asyncio.to_thread(record_settings, engine, feed, policy, company_id, hours, datetime.now(UTC))


def _due(engine: Engine, cutoff: datetime, *, companies: bool = True) -> list[str | None]:
    """The client (None) when its settings were last read before `cutoff`, then (`companies`) the companies due."""
    with Session(engine) as session:
        at = fetched_at(session, None)
        client: list[str | None] = [None] if at is None or at < cutoff else []
        return client + list(companies_due(session, cutoff)) if companies else client


async def refresh_new_company(settings: Settings, engine: Engine, feed: ChangeFeed | None, company_id: str) -> bool:
    """A company Codat just created: read its settings, and the client's when they are a day old."""
    policy = FreshnessPolicy.from_settings(settings)
    if not policy.follow_schedules:
        return False
    async with CodatClient.from_settings(settings) as codat:
        if await asyncio.to_thread(_due, engine, datetime.now(UTC) - SETTINGS_MAX_AGE, companies=False):
            await refresh_settings(codat, engine, feed, policy)
        return await refresh_settings(codat, engine, feed, policy, company_id)


async def refresh_due(
    settings: Settings,
    engine: Engine,
    feed: ChangeFeed | None,
    client: CodatClient | None = None,
    now: datetime | None = None,
) -> str:
    """Read the client's and every company's settings not read for `SETTINGS_MAX_AGE` (at `now`): one call
    each, the longest unread first. Returns a summary line."""
    policy = FreshnessPolicy.from_settings(settings)
    if not policy.follow_schedules:
        return "skipped=no_api_key"
    cutoff = (now or datetime.now(UTC)) - SETTINGS_MAX_AGE
    targets = await asyncio.to_thread(_due, engine, cutoff)
    read = changed = failed = 0
    async with codat_client(settings, client) as codat:
        for company_id in targets:
            try:
                changed += await refresh_settings(codat, engine, feed, policy, company_id)
                read += 1
            except CodatError as exc:
                failed += 1
                _unread(company_id, exc)
                if exc.code in GIVE_UP:
                    break
    return f"read={read} changed={changed} failed={failed} due={len(targets)}"


SETTINGS_JOB: PeriodicJob[WorkerRuntime] = PeriodicJob(
    "refresh_sync_settings",
    lambda runtime: SETTINGS_EVERY_SECONDS if runtime.settings.codat_api_key else 0.0,
    lambda runtime: asyncio.run(refresh_due(runtime.settings, runtime.engine, runtime.feed)),
)
"""Once a day where Codat is called (an API key is set); off otherwise."""


def declare_sync_settings(broker: dramatiq.Broker, runtime: WorkerRuntime) -> Callable[[Iterable[str]], None]:
    """Declare the `fetch_sync_settings` actor; return what queues it for companies Codat just created (it
    queues nothing without an API key)."""

    def fetch_sync_settings(company_id: str) -> None:
        try:
            asyncio.run(refresh_new_company(runtime.settings, runtime.engine, runtime.feed, company_id))
        except CodatError as exc:
            if exc.code == ErrorCode.CODAT_UNAVAILABLE:
                raise  # dramatiq retries it later
            # Asking again would get the same answer (unknown company, refused key): the daily read retries.
            _unread(company_id, exc)

    actor: dramatiq.Actor = dramatiq.Actor(  # type: ignore[type-arg]
        fetch_sync_settings,
        broker=broker,
        actor_name=SETTINGS_ACTOR,
        queue_name=OPS_QUEUE,
        priority=20,
        options={"max_retries": 3, "min_backoff": 5_000, "max_backoff": 300_000, "time_limit": 120_000},
    )

    def queue(company_ids: Iterable[str]) -> None:
        if not runtime.settings.codat_api_key:
            return
        for company_id in company_ids:
            actor.send(company_id)

    return queue
