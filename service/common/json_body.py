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


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as `model` (an empty body reads as `{}`); 400 otherwise."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{where}: {message}") from None
