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


def nul_at(value: object, where: str = "body") -> str | None:
    """Where in a parsed JSON value a string holds U+0000 (PostgreSQL refuses to store one), or None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if found := nul_at(key, where) or nul_at(item, key if where == "body" else f"{where}.{key}"):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := nul_at(item, f"{where}.{index}"):
                return found
    return None


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as `model` (an empty body reads as `{}`); 400 otherwise."""
    try:
        data = json.loads(await request.body() or b"{}")
        nul = nul_at(data)
    except (ValueError, RecursionError):
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not valid JSON (or nested too deeply)") from None
    if nul is not None:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{nul}: a string may not hold a NUL character (\\u0000)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{where}: {message}") from None
