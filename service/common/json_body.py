"""Reading a JSON request body into a pydantic model, with the API's 400 answers.

One reader for every route that takes a JSON body, so a malformed or invalid body gets the same
`invalid_json` / `invalid_parameter` error (naming the first offending field) everywhere.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode

M = TypeVar("M", bound=BaseModel)


def holds_nul(value: object) -> bool:
    """Whether any string in a parsed JSON value holds U+0000 (PostgreSQL refuses to store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as `model` (an empty body reads as `{}`); 400 otherwise."""
    try:
        data = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not valid JSON") from None
    if holds_nul(data):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "body: no string may hold a NUL character (\\u0000)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{where}: {message}") from None
