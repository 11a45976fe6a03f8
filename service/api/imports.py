"""`/v1/admin/imports`: import an existing Codat account on the workers (`workers/codat/importer.py`).

A job survives restarts of either side; resuming one restarts it, retrying the companies that failed."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.imports import DEFAULT_CONCURRENCY, ImportRequest
from service.api.admin import start_on_workers
from service.api.reads import not_found, page_of, page_start
from service.common.json_body import read_model
from service.common.services import services
from workers.codat.import_jobs import ImportJobNotFound, create_job, job_out, list_jobs, load_job, shown_status
from workers.codat.importer import start_message
from workers.ledger.tables import ImportJob

log = logging.getLogger("synctrack.admin")


def _load(request: Request) -> ImportJob:
    try:
        return load_job(services(request).engine, request.path_params["job_id"])
    except ImportJobNotFound:
        raise not_found("import job", request.path_params["job_id"]) from None


async def start_import(request: Request) -> JSONResponse:
    body = await read_model(request, ImportRequest)
    engine = services(request).engine
    lookback = body.lookback_hours or services(request).settings.reconcile_lookback_hours

    def run() -> JSONResponse:
        job = create_job(engine, body.company_id, lookback)
        start_on_workers(request, start_message(job.id, DEFAULT_CONCURRENCY))
        log.info("job=%s action=import_started companies=%s", job.id, len(body.company_id) or "all")
        out = job_out(engine, job)
        return JSONResponse(
            out.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/admin/imports/{job.id}"}
        )

    return await run_in_threadpool(run)


def list_imports(request: Request) -> JSONResponse:
    limit, before = page_start(request)
    engine = services(request).engine
    return page_of(list_jobs(engine, limit, before), limit, lambda row: job_out(engine, row), "created_at", "id")


def get_import(request: Request) -> JSONResponse:
    return JSONResponse(job_out(services(request).engine, _load(request)).model_dump(mode="json"))


async def resume_import(request: Request) -> JSONResponse:
    def run() -> JSONResponse:
        job = _load(request)
        status = shown_status(job)
        if status == "running" or (status == "completed" and job.failed == 0):
            raise ApiError(
                409,
                ErrorCode.CONFLICT,
                f"import {job.id} is {status}; only a pending, interrupted, failed or partly failed one resumes",
            )
        start_on_workers(request, start_message(job.id, DEFAULT_CONCURRENCY))
        log.info("job=%s action=import_resumed done=%d failed=%d total=%d", job.id, job.done, job.failed, job.total)
        return JSONResponse(job_out(services(request).engine, job).model_dump(mode="json"), status_code=202)

    return await run_in_threadpool(run)


routes = [
    Route("/v1/admin/imports", start_import, methods=["POST"]),
    Route("/v1/admin/imports", list_imports, methods=["GET"]),
    Route("/v1/admin/imports/{job_id}", get_import),
    Route("/v1/admin/imports/{job_id}/resume", resume_import, methods=["POST"]),
]
