"""The stream's own events as SSE frames: ``snapshot`` and ``reset`` (changes come framed from the feed)."""

from __future__ import annotations

import json
from typing import Any

from service.stream.client import SLOW_CLIENT, STREAM_INTERRUPTED, TOKEN_EXPIRED, TOKEN_REVOKED

RESET_DETAIL = {
    "last_event_id_not_found": "Last-Event-ID is not in the stream (unknown, or older than the retention window)",
    SLOW_CLIENT: "the client read too slowly and its buffer overflowed",
    STREAM_INTERRUPTED: "the change feed was interrupted and changes may have been missed",
}
TOKEN_DETAIL = {
    TOKEN_REVOKED: "the token this stream was opened with has been revoked; the stream ends",
    TOKEN_EXPIRED: "the token this stream was opened with has expired; reconnect with a new token",
}
"""Resets that end a company token's stream: the state is not worth re-reading with that token."""


def frame(event_id: str, name: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


def reset_frame(position: str, reason: str) -> bytes:
    detail = TOKEN_DETAIL.get(reason) or RESET_DETAIL.get(reason, reason) + "; re-read the state from the JSON API"
    return frame(position, "reset", {"reason": reason, "detail": detail, "event_id": None})
