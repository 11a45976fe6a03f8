"""Keyset pagination: `limit` and an opaque `cursor` naming the last row a page ended on."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from starlette.requests import Request

from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, parse_time

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def page_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(*values: Any) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(request: Request, size: int) -> list[Any] | None:
    raw = request.query_params.get("cursor")
    if not raw:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, "cursor is not one this API gave out")
    return values


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
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values
