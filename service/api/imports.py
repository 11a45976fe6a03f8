"""`/v1/admin/imports`: import an existing Codat account, on the workers.

`POST /v1/admin/imports` records a job and puts its first chunk on the workers' `ops` queue
(`workers/codat/importer.py`); the job survives restarts of either side. `GET /v1/admin/imports/{id}`
and `GET /v1/admin/imports` show progress; `POST /v1/admin/imports/{id}/resume` restarts an interrupted
or finished job, retrying the companies that failed.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.api import Page
from schemas.errors import ApiError, ErrorCode
from schemas.imports import DEFAULT_CONCURRENCY, ImportRequest
from service.api.admin import admin_redis, namespace_of
from service.api.reads import time_cursor
from service.common.json_body import read_model
from service.common.pagination import decode_cursor, encode_cursor, page_limit
from service.common.services import services
from workers.codat.import_jobs import ImportJobNotFound, create_job, job_out, list_jobs, load_job, shown_status
from workers.codat.importer import start_message
from workers.ledger.tables import ImportJob
from workers.runtime.redis_queues import push

log = logging.getLogger("synctrack.admin")


def job_not_found(job_id: str) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, f"no import job with id {job_id!r}")


def start_on_workers(request: Request, job: ImportJob) -> None:
    push(admin_redis(request), namespace_of(request), [start_message(job.id, DEFAULT_CONCURRENCY)])


async def start_import(request: Request) -> JSONResponse:
    body = await read_model(request, ImportRequest)
    engine = services(request).engine
    lookback = body.lookback_hours or services(request).settings.reconcile_lookback_hours

    def run() -> JSONResponse:
        job = create_job(engine, body.company_id, lookback)
        start_on_workers(request, job)
        log.info("job=%s action=import_started companies=%s", job.id, len(body.company_id) or "all")
        out = job_out(engine, job)
        return JSONResponse(
            out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/admin/imports/{job.id}"}
        )

    return await run_in_threadpool(run)


def list_imports(request: Request) -> JSONResponse:
    limit = page_limit(request)
    cursor = decode_cursor(request, 2)
    before = (time_cursor(cursor[0]), str(cursor[1])) if cursor else None
    engine = services(request).engine
    rows = list_jobs(engine, limit, before)
    items = [job_out(engine, row) for row in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    page = Page[Any](items=items, next_cursor=encode_cursor(last.created_at, last.id) if last else None)
    return JSONResponse(page.model_dump(mode="json"))


def get_import(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    engine = services(request).engine
    try:
        job = load_job(engine, job_id)
    except ImportJobNotFound:
        raise job_not_found(job_id) from None
    return JSONResponse(job_out(engine, job).model_dump(mode="json"))


async def resume_import(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    engine = services(request).engine

    def run() -> JSONResponse:
        try:
            job = load_job(engine, job_id)
        except ImportJobNotFound:
            raise job_not_found(job_id) from None
        status = shown_status(job)
        if status == "running" or (status == "completed" and job.failed == 0):
            raise ApiError(
                409,
                ErrorCode.CONFLICT,
                f"import {job_id} is {status}; only a pending, interrupted, failed or partly failed one resumes",
            )
        start_on_workers(request, job)
        log.info("job=%s action=import_resumed done=%d failed=%d total=%d", job.id, job.done, job.failed, job.total)
        return JSONResponse(job_out(engine, job).model_dump(mode="json"), status_code=202)

    return await run_in_threadpool(run)


routes = [
    Route("/v1/admin/imports", start_import, methods=["POST"]),
    Route("/v1/admin/imports", list_imports, methods=["GET"]),
    Route("/v1/admin/imports/{job_id}", get_import),
    Route("/v1/admin/imports/{job_id}/resume", resume_import, methods=["POST"]),
]
