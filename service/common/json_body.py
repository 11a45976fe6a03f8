"""Reading a JSON request body into a pydantic model, with the API's 400 answers.

Every route taking a body gets the same `invalid_json` / `invalid_parameter` errors, no unstorable string
(`schemas/storable.py`) reaches a handler, and no body is read past `SYNCTRACK_MAX_ADMIN_BODY_BYTES` (413).
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode
from schemas.storable import unstorable_at
from service.common.services import services

M = TypeVar("M", bound=BaseModel)


async def read_bounded(request: Request, limit: int) -> bytes:
    """The request's body; 413 as soon as it is known to be over `limit` bytes (declared, or while read)."""
    too_large = ApiError(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the body is larger than the {limit}-byte limit (SYNCTRACK_MAX_ADMIN_BODY_BYTES)",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as `model` (an empty body reads as `{}`); 400 otherwise, 413 when too large."""
    limit = services(request).settings.max_admin_body_bytes
    body = await read_bounded(request, limit)
    try:
        data = json.loads(body or b"{}")
        refused = unstorable_at(data, body)
    except (ValueError, RecursionError):
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not valid JSON (or nested too deeply)") from None
    if refused is not None:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, refused)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{where}: {message}") from None
