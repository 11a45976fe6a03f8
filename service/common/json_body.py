"""Reading a JSON request body into a pydantic model, with the API's 400 answers.

One reader for every route that takes a JSON body, so a malformed or invalid body gets the same
`invalid_json` / `invalid_parameter` error (naming the first offending field) everywhere, and a string
no database can store (`service/common/text.py`) never reaches a handler.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode
from service.common.text import unstorable

M = TypeVar("M", bound=BaseModel)


def unstorable_at(value: object, where: str = "body") -> str | None:
    """Where in a parsed JSON value a string (a key or a value) holds what no database stores, and what;
    None when every string can be stored."""
    if isinstance(value, str):
        what = unstorable(value)
        return f"{where}: a string may not hold {what}" if what else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = key if where == "body" else f"{where}.{key}"
            if found := unstorable_at(key, where) or unstorable_at(item, inner):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := unstorable_at(item, f"{where}.{index}"):
                return found
    return None


async def read_model(request: Request, model: type[M]) -> M:
    """The JSON body validated as `model` (an empty body reads as `{}`); 400 otherwise."""
    try:
        data = json.loads(await request.body() or b"{}")
        refused = unstorable_at(data)
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
