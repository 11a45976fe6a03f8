"""Answers that their handlers build as plain dicts: these models describe them in the OpenAPI document
(`service/api/openapi.py`), and the schema-driven API tests check each handler still answers this shape."""

from __future__ import annotations

from typing import Literal

from schemas.api import ApiModel
from schemas.ops import DeadLetterOut


class HealthOut(ApiModel):
    status: Literal["ok"]


class ReadyOut(ApiModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
    """Each dependency (`database`, `redis`): `ok`, or `unavailable: <reason>`."""


class StreamStatusOut(ApiModel):
    clients: int
    buffered: int
    overflows: int
    reader: Literal["running", "stopped"]
    position: str | None
    tasks: int


class DeadLetterPage(ApiModel):
    items: list[DeadLetterOut]
    next_cursor: str | None
    total: int


class PurgeOut(ApiModel):
    purged: int
