"""`/v1/admin/…`: replay stored webhooks (on the workers, `workers/ops/actors.py`), look at the queues and
look after dead letters (`workers/ops/deadletters.py`)."""

from __future__ import annotations

import json
import logging

from redis.exceptions import RedisError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.errors import ApiError, ErrorCode
from schemas.ops import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_REPLAY_RATE,
    DeadLetterDetail,
    DeadLetterOut,
    DryRunOut,
    QueueOut,
    QueuesOut,
    RedriveOut,
    RedriveRequest,
    ReplayJobOut,
    ReplayRequest,
)
from service.api.reads import event_out, newest_first, page_of
from service.common.json_body import read_model
from service.common.pagination import decode_cursor, encode_cursor, page_limit
from service.common.services import services
from workers.ledger.tables import ReplayJob
from workers.ops.actors import start_message
from workers.ops.deadletters import DeadLetters
from workers.ops.replay import cancel_job, count_selection, create_job, job_out, load_job, sample_selection
from workers.runtime.metrics import record_redriven
from workers.runtime.redis_queues import Encoded, push, queue_states

log = logging.getLogger("synctrack.admin")


def namespace_of(request: Request) -> str:
    return services(request).settings.redis_namespace


def start_on_workers(request: Request, message: Encoded) -> None:
    """Push the message that starts (or resumes) a job onto the workers' queue, from the thread pool."""
    push(services(request).admin_redis, namespace_of(request), [message])


def _job_out(request: Request, job: ReplayJob) -> ReplayJobOut:
    return job_out(job, services(request).admin_redis, namespace_of(request))


async def replay(request: Request) -> JSONResponse:
    body = await read_model(request, ReplayRequest)
    filters = body.filters()
    engine = services(request).engine

    def run() -> JSONResponse:
        if body.dry_run:
            count, pruned = count_selection(engine, filters)
            sample = [event_out(row) for row in sample_selection(engine, filters, body.sample)]
            out = DryRunOut(count=count, pruned=pruned, sample=sample)
            return JSONResponse(out.model_dump(mode="json"))
        job = create_job(engine, filters)
        start_on_workers(request, start_message(job.id, body.rate, body.max_backlog))
        log.info("job=%s action=replay_started total=%d filters=%s", job.id, job.total, json.dumps(job.filters))
        return JSONResponse(
            _job_out(request, job).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/admin/replays/{job.id}"},
        )

    return await run_in_threadpool(run)


def list_replays(request: Request) -> JSONResponse:
    query, limit = newest_first(request, select(ReplayJob), ReplayJob.created_at, ReplayJob.id)
    with Session(services(request).engine) as session:
        rows = session.exec(query).all()
    return page_of(rows, limit, lambda row: _job_out(request, row), "created_at", "id")


def get_replay(request: Request) -> JSONResponse:
    job = load_job(services(request).engine, request.path_params["job_id"])
    return JSONResponse(_job_out(request, job).model_dump(mode="json"))


def cancel_replay(request: Request) -> JSONResponse:
    job = cancel_job(services(request).engine, request.path_params["job_id"])
    log.info("job=%s action=replay_cancelled status=%s", job.id, job.status)
    return JSONResponse(_job_out(request, job).model_dump(mode="json"))


async def resume_replay(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    try:
        rate = float(request.query_params.get("rate", DEFAULT_REPLAY_RATE))
        max_backlog = int(request.query_params.get("max_backlog", DEFAULT_MAX_BACKLOG))
    except ValueError:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "rate must be a number, max_backlog an integer") from None
    if rate < 0 or max_backlog < 1:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "rate must be >= 0 and max_backlog >= 1")

    def run() -> JSONResponse:
        job = load_job(services(request).engine, job_id)
        shown = _job_out(request, job)
        if shown.status not in ("interrupted", "pending"):
            raise ApiError(
                409, ErrorCode.CONFLICT, f"replay {job_id} is {shown.status}; only an interrupted one resumes"
            )
        start_on_workers(request, start_message(job.id, rate, max_backlog))
        log.info("job=%s action=replay_resumed done=%d total=%d", job.id, job.done, job.total)
        return JSONResponse(shown.model_dump(mode="json"), status_code=202)

    return await run_in_threadpool(run)


async def list_queues(request: Request) -> JSONResponse:
    """Every queue, live and backfill first: 503 `queue_unavailable` while Redis does not answer."""
    try:
        states = await queue_states(services(request).redis, namespace_of(request))
    except (RedisError, OSError) as exc:
        raise ApiError(503, ErrorCode.QUEUE_UNAVAILABLE, f"Redis did not answer: {exc}") from None
    items = [QueueOut.model_validate(state, from_attributes=True) for state in states]
    return JSONResponse(QueuesOut(items=items).model_dump(mode="json"))


def dead_letters(request: Request) -> DeadLetters:
    return DeadLetters(services(request).admin_redis, namespace_of(request), engine=services(request).engine)


def list_dead_letters(request: Request) -> JSONResponse:
    limit = page_limit(request)
    cursor = decode_cursor(request, 1, ("int",))
    offset = int(cursor[0]) if cursor else 0
    letters = dead_letters(request)
    total = letters.count()
    items = [DeadLetterOut.model_validate(x.summary()).model_dump(mode="json") for x in letters.newest(limit, offset)]
    next_cursor = encode_cursor(offset + limit) if offset + limit < total else None
    return JSONResponse({"items": items, "next_cursor": next_cursor, "total": total})


def get_dead_letter(request: Request) -> JSONResponse:
    ident = request.path_params["letter_id"]
    letter = dead_letters(request).get(ident)
    if letter is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no dead letter with id or event id {ident!r}")
    detail = DeadLetterDetail.model_validate({**letter.summary(), "traceback": letter.traceback})
    return JSONResponse(detail.model_dump(mode="json"))


async def redrive(request: Request) -> JSONResponse:
    body = await read_model(request, RedriveRequest)

    def run() -> JSONResponse:
        moved = dead_letters(request).redrive(None if body.all else body.ids)
        record_redriven(len(moved))
        for letter in moved:
            log.info(
                "event=%s company=%s connection=%s action=dead_letter_redriven letter=%s",
                letter.event_id,
                letter.company_id,
                letter.connection_id,
                letter.id,
            )
        out = RedriveOut(redriven=len(moved), ids=[m.id for m in moved], event_ids=[m.event_id for m in moved])
        return JSONResponse(out.model_dump(mode="json"))

    return await run_in_threadpool(run)


async def purge(request: Request) -> JSONResponse:
    body = await read_model(request, RedriveRequest)

    def run() -> JSONResponse:
        removed = dead_letters(request).purge(None if body.all else body.ids)
        log.info("action=dead_letters_purged count=%d", removed)
        return JSONResponse({"purged": removed})

    return await run_in_threadpool(run)


routes = [
    Route("/v1/admin/replay", replay, methods=["POST"]),
    Route("/v1/admin/replays", list_replays),
    Route("/v1/admin/replays/{job_id}", get_replay),
    Route("/v1/admin/replays/{job_id}/cancel", cancel_replay, methods=["POST"]),
    Route("/v1/admin/replays/{job_id}/resume", resume_replay, methods=["POST"]),
    Route("/v1/admin/queues", list_queues),
    Route("/v1/admin/dead-letters", list_dead_letters),
    Route("/v1/admin/dead-letters/redrive", redrive, methods=["POST"]),
    Route("/v1/admin/dead-letters/purge", purge, methods=["POST"]),
    Route("/v1/admin/dead-letters/{letter_id}", get_dead_letter),
]
