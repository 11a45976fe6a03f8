"""JSON in and out on the hot paths: orjson where it can, the standard library where it must.

Where orjson refuses what the standard library accepts (NaN, integers past 64 bits), the standard library decides,
so what counts as JSON is the same everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: bytes | str) -> Any:
    """Decode JSON; raises `ValueError` (a `json.JSONDecodeError`) for what is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> str:
    """Encode compactly (no spaces), keys in the order given."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))
