"""A refresh Synctrack asks for itself (keep-alive, after a platform incident), taken the way a user's is.

One call through the one Codat client (its retries, `Retry-After` and quota), then recorded as a refresh action
(`workers.codat.actions`): audited with the job's `actor`, its sync started and announced; a refusal is audited as
failed and raised.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from schemas.codat import pull_operation
from schemas.errors import ErrorCode
from schemas.events import InvalidEnvelope
from workers.codat.actions import ActionResult, record_failure, record_refresh
from workers.codat.client import CodatClient
from workers.codat.errors import CodatError
from workers.codat.reconcile import publish

if TYPE_CHECKING:
    from workers.ledger.worker_runtime import WorkerRuntime

GIVE_UP = (ErrorCode.CODAT_AUTH_FAILED, ErrorCode.CODAT_UNAVAILABLE)
"""Failures after which further calls of the same run would fail the same way, or only add to Codat's load."""


async def refresh_as(
    runtime: WorkerRuntime, codat: CodatClient, actor: str, company_id: str, connection_id: str, data_type: str
) -> ActionResult:
    """Ask Codat to refresh `data_type` of the connection and record it; raises `CodatError` (audited) when
    Codat refuses or cannot be reached."""
    at = datetime.now(UTC)
    try:
        status, raw = await codat.refresh_data_type(company_id, data_type, connection_id)
        try:
            operations = [pull_operation(raw)]
        except InvalidEnvelope as exc:
            why = f"Codat's pull operation is unreadable: {exc}"
            raise CodatError(502, ErrorCode.CODAT_ERROR, why, status) from None
    except CodatError as exc:
        await asyncio.to_thread(
            record_failure,
            runtime.engine,
            action="refresh",
            actor=actor,
            at=at,
            company_id=company_id,
            connection_id=connection_id,
            data_type=data_type,
            codat_status=exc.codat_status,
            detail=f"{exc.code.value}: {exc.detail}",
        )
        raise
    result = await asyncio.to_thread(
        record_refresh,
        runtime.engine,
        actor=actor,
        at=at,
        company_id=company_id,
        data_type=data_type,
        connection_id=connection_id,
        codat_status=status,
        operations=operations,
        freshness=runtime.freshness,
    )
    publish(runtime.feed, result.entries)
    return result
