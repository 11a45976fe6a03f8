"""Ask Codat about syncs that waited too long (for `workers.jobs.stale`): per company one `dataStatus`, and a pull
operation only where that decides. Each sync gets a `CodatAnswer`: `running`, `result` (a pull operation finished
at or after its request), or neither. A company that could not be asked gets no answer and waits for the next
check; once Codat is unavailable no further company is asked in that run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from schemas.codat import CodatAnswer, DataTypeStatus, OpenSync, PullOperation, data_status, pull_operation
from schemas.errors import ErrorCode
from schemas.events import ANY_DATA_TYPE, InvalidEnvelope
from schemas.settings import Settings
from schemas.statuses import ACTIVE_STATUSES, IN_PROGRESS_STATUSES
from workers.codat.client import CodatClient
from workers.codat.errors import CodatError

log = logging.getLogger("synctrack.stale")

NOTHING_NEWER = CodatAnswer()


def ask_codat(settings: Settings, syncs: Sequence[OpenSync]) -> dict[str, CodatAnswer]:
    """What Codat says of each sync, by sync id (see the module); blocks, for the periodic runner's thread."""
    return asyncio.run(ask_companies(settings, syncs))


async def ask_companies(settings: Settings, syncs: Sequence[OpenSync]) -> dict[str, CodatAnswer]:
    """Ask about `syncs`, company by company; syncs Codat could not be asked about are left out."""
    by_company: dict[str, list[OpenSync]] = {}
    for sync in syncs:
        by_company.setdefault(sync.company_id, []).append(sync)
    answers: dict[str, CodatAnswer] = {}
    async with CodatClient.from_settings(settings) as client:
        for company_id, group in sorted(by_company.items()):
            try:
                answers.update(await ask_company(client, company_id, group))
            except InvalidEnvelope as exc:
                log.warning("company=%s msg=unreadable_data_status error=%s", company_id, exc)
            except CodatError as exc:
                if exc.codat_status == 404:
                    answers.update({sync.id: NOTHING_NEWER for sync in group})
                elif exc.code is ErrorCode.CODAT_AUTH_FAILED:
                    log.warning("msg=codat_refused_key detail=%r", exc.detail)
                    return answers | {sync.id: NOTHING_NEWER for sync in syncs if sync.id not in answers}
                else:
                    log.warning(
                        "company=%s msg=codat_not_asked error=%s detail=%r", company_id, exc.code.value, exc.detail
                    )
                    if exc.code is ErrorCode.CODAT_UNAVAILABLE:
                        break  # every further call would fail the same way, or add to Codat's load
    return answers


async def ask_company(client: CodatClient, company_id: str, syncs: Sequence[OpenSync]) -> dict[str, CodatAnswer]:
    """One company's syncs: one `dataStatus`, and the pull operations that decide an answer (each read once)."""
    statuses = data_status(await client.data_status(company_id))
    read: dict[str, PullOperation | None] = {}

    async def read_operation(dataset_id: str) -> PullOperation | None:
        """The pull operation, read at most once per check; None when Codat does not know it."""
        if dataset_id not in read:
            read[dataset_id] = None
            try:
                read[dataset_id] = pull_operation(await client.pull_operation(company_id, dataset_id))
            except InvalidEnvelope as exc:
                log.warning("company=%s dataset=%s msg=unreadable error=%s", company_id, dataset_id, exc)
            except CodatError as exc:
                if exc.codat_status != 404:
                    raise
        return read[dataset_id]

    return {sync.id: await _answer(sync, statuses, read_operation) for sync in syncs}


async def _answer(
    sync: OpenSync, statuses: list[DataTypeStatus], read_operation: Callable[[str], Awaitable[PullOperation | None]]
) -> CodatAnswer:
    if sync.dataset_id is not None:
        latest = next((s for s in statuses if s.latest_sync_id == sync.dataset_id), None)
        if latest is not None and latest.current_status in ACTIVE_STATUSES:
            return CodatAnswer(running=latest.current_status)
        operation = await read_operation(sync.dataset_id)
        if operation is not None:
            return _judge(sync, operation)
    relevant = [s for s in statuses if sync.data_type in (ANY_DATA_TYPE, s.data_type)]
    running = [s.current_status for s in relevant if s.current_status in ACTIVE_STATUSES]
    if running:
        return CodatAnswer(running=min(running, key=IN_PROGRESS_STATUSES.index))
    for status in sorted(relevant, key=lambda s: s.data_type):
        if status.latest_sync_id is None or not _may_be_newer(status, sync.requested_at):
            continue
        operation = await read_operation(status.latest_sync_id)
        if operation is not None and operation.connection_id == sync.connection_id:
            answer = _judge(sync, operation)
            if answer.result is not None:
                return answer
    return NOTHING_NEWER


def _judge(sync: OpenSync, operation: PullOperation) -> CodatAnswer:
    if not operation.finished:
        return CodatAnswer(running=operation.status)
    if (operation.completed or operation.requested) >= sync.requested_at:
        return CodatAnswer(result=operation)
    return NOTHING_NEWER


def _may_be_newer(status: DataTypeStatus, requested_at: datetime) -> bool:
    """False when `dataStatus` alone shows the data type's latest pull operation succeeded before the request."""
    if status.latest_sync_id == status.latest_successful_sync_id and status.last_successful_sync is not None:
        return status.last_successful_sync >= requested_at
    return True
