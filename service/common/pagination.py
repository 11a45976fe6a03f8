"""Keyset pagination: `limit` and an opaque `cursor` naming the last row a page ended on."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, parse_time
from schemas.storable import unstorable

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR_LENGTH = 2048
"""Characters of a `cursor` parameter; every cursor this API gives out is far shorter."""
MAX_CURSOR_TEXT = 512
MAX_CURSOR_INT = 2**53
"""Bounds of one element of a cursor: any database and Redis take these without overflowing."""
_DIGITS = re.compile(r"[0-9]{1,4}")
"""ASCII digits only: `str.isdigit` also admits `²`, which `int()` refuses."""

CursorKind = Literal["text", "int", "time"]
"""What one element of a cursor must be: a string, a non-negative integer, or an ISO 8601 time string."""


def page_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(*values: Any) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(request: Request, size: int, kinds: Sequence[CursorKind] = ()) -> list[Any] | None:
    """The `size` values of the request's cursor, or None without one; 400 `invalid_parameter` otherwise.

    Each value must be a storable string of at most `MAX_CURSOR_TEXT` characters or an integer from 0 to
    `MAX_CURSOR_INT`, of the kind `kinds` names at its position: never null, a list, a float or a huge number.
    """
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    values: Any = None
    if len(raw) <= MAX_CURSOR_LENGTH:
        try:
            values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (ValueError, RecursionError):
            values = None
    padded = [*kinds, *[None] * size]  # a position `kinds` does not name holds either kind
    if not isinstance(values, list) or len(values) != size or not all(map(_valid, values, padded)):
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "cursor is not one this API gave out")
    return values


def _valid(value: object, kind: CursorKind | None) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return kind in (None, "int") and 0 <= value <= MAX_CURSOR_INT
    if not isinstance(value, str) or len(value) > MAX_CURSOR_TEXT or unstorable(value) is not None:
        return False
    if kind == "time":
        try:
            parse_time(value)
        except InvalidEnvelope:
            return False
    return kind != "int"


def time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return parse_time(raw)
    except InvalidEnvelope:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"{name} must be an ISO 8601 time") from None


def list_param(request: Request, name: str) -> list[str]:
    """A filter given repeated (`?x=a&x=b`) or comma-separated (`?x=a,b`)."""
    return [part.strip() for raw in request.query_params.getlist(name) for part in raw.split(",") if part.strip()]
