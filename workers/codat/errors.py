"""How a Codat failure is answered: `CodatError`, and `map_failure` from Codat's HTTP answer to Synctrack's
(a refused API key is a 502 naming the setting, never the key; a rate limit a 503 with `Retry-After`).
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime

import httpx

from schemas.errors import ApiError, ErrorCode
from schemas.events import parse_time

IN_PROGRESS_MARKER = "alreadyinprogress"
"""Codat's ``DatasetAlreadyInProgressException`` (or its sentence), compared without case or spaces."""
KEY_SETTING = "SYNCTRACK_CODAT_API_KEY"
GIVE_UP = (ErrorCode.CODAT_AUTH_FAILED, ErrorCode.CODAT_UNAVAILABLE)
"""Failures after which further calls of the same run would fail the same way, or only add to Codat's load."""


class CodatError(ApiError):
    """Raised when a Codat call fails; `codat_status` is Codat's HTTP status (None if no answer)."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        detail: str,
        codat_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, detail, headers)
        self.codat_status = codat_status


EPOCH_SECONDS = 1_000_000_000
"""A reset value above this is a Unix time; below it, seconds from now."""


def reset_delay(value: str, now: float) -> float | None:
    """Seconds from `now` (Unix time) until `value`: seconds, a Unix time, an ISO or HTTP date; None if unreadable."""
    text = value.strip()
    try:
        number = float(text)
        return max(0.0, number - now if number > EPOCH_SECONDS else number)
    except ValueError:
        pass
    for parse in (parse_time, parsedate_to_datetime):
        try:
            return max(0.0, parse(text).timestamp() - now)
        except (TypeError, ValueError):  # `InvalidEnvelope` is a ValueError
            pass
    return None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds, None if absent or unreadable."""
    value = response.headers.get("retry-after")
    return reset_delay(value, time.time()) if value else None


def codat_message(response: httpx.Response) -> str:
    """Codat's own error sentence (``{"error": ...}``), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        for name in ("error", "message", "detail"):
            if isinstance(body.get(name), str) and body[name]:
                return str(body[name])[:300]
    return str(body)[:200]


def map_failure(response: httpx.Response, target: str, attempts: int) -> CodatError:
    """Translate a Codat error answer into the error Synctrack answers with."""
    status = response.status_code
    message = codat_message(response)
    if status in (401, 403):
        detail = f"Codat refused Synctrack's API key (HTTP {status}); check {KEY_SETTING}"
        return CodatError(502, ErrorCode.CODAT_AUTH_FAILED, detail, status)
    if status in (400, 409) and IN_PROGRESS_MARKER in message.lower().replace(" ", ""):
        detail = f"a sync of {target} is already in progress in Codat; wait for it to finish"
        return CodatError(409, ErrorCode.SYNC_ALREADY_IN_PROGRESS, detail, status)
    if status == 404:
        return CodatError(404, ErrorCode.NOT_FOUND, f"Codat has no {target}: {message}", status)
    if status == 409:
        return CodatError(409, ErrorCode.CONFLICT, f"Codat refused the change to {target}: {message}", status)
    if status == 429 or status == 503:
        wait = retry_after_seconds(response)
        headers = {"Retry-After": str(math.ceil(wait))} if wait is not None else {}
        reason = "rate-limited Synctrack" if status == 429 else "is unavailable"
        detail = f"Codat {reason} (HTTP {status}) after {attempts} attempt(s); retry later"
        return CodatError(503, ErrorCode.CODAT_UNAVAILABLE, detail, status, headers)
    if status >= 500:
        detail = f"Codat answered HTTP {status} after {attempts} attempt(s)"
        return CodatError(502, ErrorCode.CODAT_UNAVAILABLE, detail, status)
    if status in (400, 422):
        return CodatError(400, ErrorCode.CODAT_ERROR, f"Codat rejected the request for {target}: {message}", status)
    return CodatError(502, ErrorCode.CODAT_ERROR, f"Codat answered HTTP {status} for {target}: {message}", status)
