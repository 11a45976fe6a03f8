"""Codat's free-form fields, normalised once, so nothing after the parser meets an odd shape.

An envelope that passed the receiver's check is always folded: an odd field (an object sent as a string, a null
list) becomes the one shape the ledger stores, and is never raised on.
"""

from __future__ import annotations

import json
from typing import Any


def text(value: object) -> str | None:
    """A string field: the string, or None for anything else (null, a number, an object)."""
    return value if isinstance(value, str) else None


def mapping(value: object) -> dict[str, Any] | None:
    """An object field: the object, or None."""
    return value if isinstance(value, dict) else None


def flag(value: object) -> bool:
    """A boolean field: true only when Codat said true."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _objects(value: object, key: str) -> tuple[dict[str, Any], ...] | None:
    """A list of objects: each object kept, a string as ``{key: string}``, anything else but null as ``{key: its
    JSON}``; a lone item counts as a list of one; null stays null."""
    if value is None:
        return None
    return tuple(
        item if isinstance(item, dict) else {key: item if isinstance(item, str) else json.dumps(item, default=str)}
        for item in (value if isinstance(value, list) else [value])
        if item is not None
    )


def issues(value: object) -> tuple[dict[str, Any], ...] | None:
    """`issues[]` of a read result as objects (`{type, message, links}` in Codat's documentation)."""
    return _objects(value, "message")


def connection_errors(value: object) -> tuple[dict[str, Any], ...] | None:
    """`dataConnectionErrors[]` as objects (`{statusCode, statusText, errorMessage, erroredOnUtc, status,
    resolvedOnUtc}`)."""
    return _objects(value, "errorMessage")


def is_active_error(entry: dict[str, Any]) -> bool:
    """Whether a `dataConnectionErrors[]` entry is a current problem: `status` Active, or no status and no
    `resolvedOnUtc` (an entry Codat has resolved is history)."""
    status = entry.get("status")
    if status is None:
        return not entry.get("resolvedOnUtc")
    return isinstance(status, str) and status.lower() == "active"


def status_code(value: object) -> str | None:
    """Codat's `statusCode` as text (`"403"`): a string as sent, a whole number written out, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
