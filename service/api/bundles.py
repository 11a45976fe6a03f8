"""Bundles (`SYNCTRACK_BUNDLES`): `GET /v1/companies/{company_id}/bundles` and a bundle's refresh, which records
the bundle refresh first, then queues one refresh per member data type that is not fresh (all with `?all=true`)
per Linked connection that has it, as `POST …/refresh/{data_type}` would; the request is one action."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.bundles import BundleList, BundleRefreshOut
from schemas.errors import ApiError, ErrorCode
from service.api.action_routes import action_out, action_target, check_company, queue_refresh, within_action_limit
from service.api.reads import bool_param, not_found
from service.common.services import services
from service.security.middleware import principal_of
from workers.ledger.bundles import load_bundles, load_members, start_refresh
from workers.ledger.tables import Company


def _members(request: Request) -> tuple[str, list[str]]:
    """The path's bundle and its data types; 404 `unknown_bundle` when `SYNCTRACK_BUNDLES` does not name it."""
    name = request.path_params["name"]
    bundles = services(request).settings.bundles
    if name not in bundles:
        known = ", ".join(bundles) or "none is configured (SYNCTRACK_BUNDLES)"
        raise ApiError(404, ErrorCode.UNKNOWN_BUNDLE, f"no bundle named {name!r}; known: {known}")
    return name, bundles[name]


def list_bundles(request: Request) -> JSONResponse:
    company_id = request.path_params["company_id"]
    with Session(services(request).reads) as session:
        if session.get(Company, company_id) is None:
            raise not_found("company", company_id)
        items = load_bundles(
            session, company_id, services(request).settings.bundles, services(request).freshness, datetime.now(UTC)
        )
    return JSONResponse(BundleList(items=items).model_dump(mode="json"))


async def refresh_bundle(request: Request) -> JSONResponse:
    company_id = request.path_params["company_id"]
    name, data_types = _members(request)
    everything = bool_param(request, "all") is True
    engine = services(request).engine
    await run_in_threadpool(check_company, engine, company_id, True)
    target = action_target("refresh", company_id)
    at = target["at"]
    await within_action_limit(request, target)

    def record() -> list[tuple[str, str]]:
        """Record the bundle refresh; (data type, connection) of each refresh to queue."""
        with Session(engine) as session, session.begin():
            members = load_members(session, company_id, data_types, services(request).freshness, at)
            wanted = [t for t in data_types if everything or not members[t].fresh]
            start_refresh(session, company_id, name, data_types, at, principal_of(request).subject)
        return [(t, c) for t in wanted for c in members[t].connection_ids]

    queued = await run_in_threadpool(record)
    actions = [await action_out(request, await queue_refresh(request, company_id, t, c)) for t, c in queued]
    body = BundleRefreshOut(
        company_id=company_id,
        bundle=name,
        requested_at=at,
        data_types=sorted({t for t, _ in queued}, key=data_types.index),
        actions=actions,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


routes = [
    Route("/v1/companies/{company_id}/bundles", list_bundles),
    Route("/v1/companies/{company_id}/bundles/{name}/refresh", refresh_bundle, methods=["POST"]),
]
