"""Actions against Codat (refresh, unlink, delete, reconnect) and their audit log (`GET /v1/audit`).

Codat is asked first; only when it accepts does the ledger change (`workers.codat.actions`), and the changes
go on the change feed at once. A refusal answers its error and leaves a `failed` audit row, nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.actions import ActionOut, AuditOut, ReconnectOut
from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, connection_facts
from service.api.action_limit import ActionLimit
from service.api.reads import not_found, page_of
from service.common.pagination import decode_cursor, list_param, page_limit
from service.common.services import services
from service.security.middleware import company_filter, principal_of
from workers.codat.actions import (
    ActionResult,
    find_connection,
    reconnect_refusal,
    record_delete,
    record_failure,
    record_reconnect,
    record_unlink,
    request_refresh,
)
from workers.codat.client import CodatClient
from workers.codat.errors import CodatError
from workers.ledger.durations import Timing, load_timings
from workers.ledger.tables import AuditRecord, Company, Connection
from workers.ledger.views import load_connection, sync_out

log = logging.getLogger("synctrack.actions")

DATA_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
ACTIONS = ("refresh", "unlink", "delete", "reconnect", "revoke_token")

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _codat(request: Request) -> CodatClient:
    client = services(request).codat
    if client is None:
        raise RuntimeError("the Codat client is opened by the app's lifespan, which has not run")
    return client


def _audit_out(record: AuditRecord) -> AuditOut:
    return AuditOut.model_validate(record, from_attributes=True)


async def _answer(request: Request, result: ActionResult) -> JSONResponse:
    body = await action_out(request, result)
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


async def action_out(request: Request, result: ActionResult) -> ActionOut:
    """Publish what an accepted action changed and render its answer (logged)."""
    if result.entries:
        try:
            await run_in_threadpool(services(request).feed.publish, result.entries)
        except Exception as exc:  # the ledger is committed; a dashboard catches up on its next snapshot
            log.warning("msg=change_feed_unavailable error=%s", type(exc).__name__)

    def load() -> tuple[Any, dict[str, Timing]]:
        with Session(services(request).engine) as session:
            timings = load_timings(session, result.syncs)
            if not result.connection_id or result.record.action == "refresh":
                return None, timings
            return load_connection(session, result.connection_id, services(request).freshness, _now()), timings

    connection, timings = await run_in_threadpool(load)
    syncs = [sync_out(s, timings.get(s.id)) for s in result.syncs]
    body = ActionOut(**_audit_out(result.record).model_dump(), syncs=syncs, connection=connection)
    log.info(
        "action=%s audit=%s company=%s connection=%s result=accepted syncs=%d",
        result.record.action,
        result.record.id,
        result.record.company_id,
        result.record.connection_id or "-",
        len(result.syncs),
    )
    return body


async def _refused(request: Request, exc: ApiError, target: dict[str, Any], result: str = "failed") -> ApiError:
    """Audit an action refused by Codat (a `CodatError`, with Codat's status) or by Synctrack before asking."""
    codat_status = exc.codat_status if isinstance(exc, CodatError) else None
    await run_in_threadpool(
        record_failure,
        services(request).engine,
        actor=principal_of(request).subject,
        codat_status=codat_status,
        detail=f"{exc.code.value}: {exc.detail}",
        result=result,
        **target,
    )
    log.warning(
        "action=%s company=%s result=%s error=%s codat_status=%s",
        target["action"],
        target["company_id"],
        result,
        exc.code.value,
        codat_status,
    )
    return exc


def action_target(
    action: str, company_id: str, connection_id: str | None = None, data_type: str | None = None
) -> dict[str, Any]:
    """What the audit row of an action names (`record_failure`'s keywords), at now."""
    return dict(action=action, at=_now(), company_id=company_id, connection_id=connection_id, data_type=data_type)


async def within_action_limit(request: Request, target: dict[str, Any]) -> None:
    """The check every action makes just before it calls Codat: a company token's company over
    `SYNCTRACK_ACTIONS_PER_MINUTE` is answered 429 `rate_limited` with `Retry-After`, and audited."""
    company_id = principal_of(request).company_id
    if company_id is None:
        return
    limit = services(request).get(ActionLimit)
    wait = await limit.take(company_id)
    if wait is None:
        return
    detail = (
        f"company {company_id!r} took the {limit.per_minute} actions a minute its tokens may take "
        f"(SYNCTRACK_ACTIONS_PER_MINUTE); retry in {wait} s"
    )
    error = ApiError(429, ErrorCode.RATE_LIMITED, detail, headers={"Retry-After": str(wait)})
    raise await _refused(request, error, target, "rate_limited")


def check_company(engine: Engine, company_id: str, required: bool = False) -> None:
    """404 when the ledger holds the company as deleted, or (`required`) does not hold it."""
    with Session(engine) as session:
        company = session.get(Company, company_id)
    if company is None and required:
        raise not_found("company", company_id)
    if company is not None and company.deleted_at is not None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"company {company_id!r} was deleted")


async def refresh(request: Request) -> JSONResponse:
    """Refresh every data type of the path's company, or the path's one data type."""
    company_id, data_type = request.path_params["company_id"], request.path_params.get("data_type")
    if data_type is not None and not DATA_TYPE.match(data_type):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{data_type!r} is not a Codat data type name")
    connection_id = request.query_params.get("connection_id") or None
    await run_in_threadpool(check_company, services(request).engine, company_id)
    await within_action_limit(request, action_target("refresh", company_id, connection_id, data_type))
    return await _answer(request, await queue_refresh(request, company_id, data_type, connection_id))


async def queue_refresh(
    request: Request, company_id: str, data_type: str | None, connection_id: str | None
) -> ActionResult:
    """Ask Codat to refresh `data_type` (None: everything) of the company, or of one connection, and record it
    (`request_refresh`, the one refresh path). A refusal is audited and raised as its `ApiError`. The caller has
    passed `within_action_limit`."""
    try:
        return await request_refresh(
            services(request).engine,
            _codat(request),
            actor=principal_of(request).subject,
            company_id=company_id,
            data_type=data_type,
            connection_id=connection_id,
            freshness=services(request).freshness,
        )
    except CodatError as exc:
        log.warning(
            "action=refresh company=%s result=failed error=%s codat_status=%s",
            company_id,
            exc.code.value,
            exc.codat_status,
        )
        raise


async def _ask_about_connection(
    request: Request, action: str, ask_codat: Callable[[CodatClient, Connection], Awaitable[T]]
) -> tuple[Connection, datetime, T]:
    """Ask Codat about the path's connection (404 if unknown or deleted): (connection, when asked, answer).
    An `ApiError` refusal, Synctrack's (raised by `ask_codat` before it calls Codat) or Codat's, is audited
    and raised."""
    connection_id = request.path_params["connection_id"]
    connection = await run_in_threadpool(find_connection, services(request).engine, connection_id)
    if connection is None:
        raise not_found("connection", connection_id)
    if connection.deleted_at is not None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"connection {connection_id!r} was deleted")
    target = action_target(action, connection.company_id, connection.id)
    await within_action_limit(request, target)
    try:
        answer = await ask_codat(_codat(request), connection)
    except ApiError as exc:
        raise await _refused(request, exc, target) from None
    return connection, target["at"], answer


async def _act_on_connection(
    request: Request,
    action: str,
    ask_codat: Callable[[CodatClient, Connection], Awaitable[dict[str, Any]]],
    record: Callable[..., ActionResult],
) -> JSONResponse:
    """Ask Codat to act on the path's connection, `record` its answer (the keywords `ask_codat` gives), answer 202."""
    connection, at, answer = await _ask_about_connection(request, action, ask_codat)
    result = await run_in_threadpool(
        record,
        services(request).engine,
        actor=principal_of(request).subject,
        at=at,
        answered_at=_now(),
        connection=connection,
        freshness=services(request).freshness,
        **answer,
    )
    return await _answer(request, result)


async def unlink_connection(request: Request) -> JSONResponse:
    async def ask(codat: CodatClient, connection: Connection) -> dict[str, Any]:
        status, body = await codat.unlink_connection(connection.company_id, connection.id)
        return {"codat_status": status, "answer": body}

    return await _act_on_connection(request, "unlink", ask, record_unlink)


async def delete_connection(request: Request) -> JSONResponse:
    async def ask(codat: CodatClient, connection: Connection) -> dict[str, Any]:
        return {"codat_status": await codat.delete_connection(connection.company_id, connection.id)}

    return await _act_on_connection(request, "delete", ask, record_delete)


async def reconnect_connection(request: Request) -> JSONResponse:
    """`POST /v1/connections/{connection_id}/reconnect`: 200 with the `linkUrl` Codat issues now, unchanged."""

    async def ask(codat: CodatClient, connection: Connection) -> tuple[int, str, str | None]:
        if why := await run_in_threadpool(reconnect_refusal, services(request).engine, connection):
            raise ApiError(409, ErrorCode.NOT_RECONNECTABLE, why)
        status, body = await codat.fetch_connection(connection.company_id, connection.id)
        try:
            facts = connection_facts(body)
        except InvalidEnvelope as exc:
            raise CodatError(502, ErrorCode.CODAT_ERROR, f"Codat's connection is unreadable: {exc}", status) from None
        if not facts.link_url:
            raise CodatError(502, ErrorCode.CODAT_ERROR, "Codat's connection carries no linkUrl", status)
        return status, facts.link_url, facts.status

    connection, at, (status, link_url, codat_connection_status) = await _ask_about_connection(request, "reconnect", ask)
    fetched_at = _now()
    record = await run_in_threadpool(
        record_reconnect,
        services(request).engine,
        actor=principal_of(request).subject,
        at=at,
        connection=connection,
        codat_status=status,
        codat_connection_status=codat_connection_status,
    )
    # The link is a one-time credential: it goes to the caller only, never to a log or a cache.
    log.info(
        "action=reconnect audit=%s company=%s connection=%s result=accepted",
        record.id,
        connection.company_id,
        connection.id,
    )
    body = ReconnectOut(
        connection_id=connection.id, company_id=connection.company_id, link_url=link_url, fetched_at=fetched_at
    )
    return JSONResponse(body.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


def list_audit(request: Request) -> JSONResponse:
    """`GET /v1/audit?company_id=&connection_id=&action=`: newest first, keyset-paged."""
    limit = page_limit(request)
    cursor = decode_cursor(request, 1, ("int",))
    query = select(AuditRecord)
    if company_ids := company_filter(request):
        query = query.where(col(AuditRecord.company_id).in_(company_ids))
    if connection_ids := list_param(request, "connection_id"):
        query = query.where(col(AuditRecord.connection_id).in_(connection_ids))
    if actions := list_param(request, "action"):
        if unknown := set(actions) - set(ACTIONS):
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"unknown action {sorted(unknown)[0]!r}")
        query = query.where(col(AuditRecord.action).in_(actions))
    if cursor:
        query = query.where(col(AuditRecord.id) < cursor[0])
    query = query.order_by(col(AuditRecord.id).desc()).limit(limit + 1)
    with Session(services(request).engine) as session:
        rows = session.exec(query).all()
    return page_of(rows, limit, _audit_out, "id")


routes = [
    Route("/v1/companies/{company_id}/refresh", refresh, methods=["POST"]),
    Route("/v1/companies/{company_id}/refresh/{data_type}", refresh, methods=["POST"]),
    Route("/v1/connections/{connection_id}/unlink", unlink_connection, methods=["POST"]),
    Route("/v1/connections/{connection_id}", delete_connection, methods=["DELETE"]),
    Route("/v1/connections/{connection_id}/reconnect", reconnect_connection, methods=["POST"]),
    Route("/v1/audit", list_audit),
]
