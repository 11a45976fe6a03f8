"""Injected failures of the fake's Codat API: 404/409/429/500 answers, slowness, timeouts.

A rule matches a method and a path regular expression; it answers `status` (with `Retry-After`
when given) or, without a status, only waits `delay_seconds` before the normal answer — longer
than the client's timeout, that is a timeout. `times` limits how often it fires (500 once, then
success). Rules are checked in order; the first that matches and has firings left applies.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response


def codat_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body shaped like Codat's."""
    body = {
        "statusCode": status,
        "service": "PublicApi",
        "error": message,
        "correlationId": uuid.uuid4().hex,
        "canBeRetried": "Unknown" if status < 500 else "True",
        "detailedErrorCode": 0,
    }
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class FaultRule:
    path: str = ".*"
    """A regular expression searched in the request path (``/data/queue/invoices$``)."""
    method: str | None = None
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    delay_seconds: float = 0.0
    times: int | None = None
    """How many requests it applies to; None = every one."""
    fired: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return self._pattern.search(path) is not None

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "method": self.method,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_seconds": self.delay_seconds,
            "times": self.times,
            "fired": self.fired,
        }


DEFAULT_MESSAGES = {
    401: "Unauthorized",
    404: "Not found",
    409: "DatasetAlreadyInProgressException: a dataset of this type is already in progress",
    429: "Too many requests: rate limit exceeded",
    500: "Internal server error",
    503: "Service unavailable",
}


@dataclass
class Faults:
    rules: list[FaultRule] = field(default_factory=list)

    def add(self, spec: dict[str, Any]) -> FaultRule:
        allowed = {"path", "method", "status", "message", "retry_after", "delay_seconds", "times"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        rule = FaultRule(**spec)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def apply(self, method: str, path: str) -> Response | None:
        """Wait and/or answer as the first matching rule says; None lets the request through."""
        for rule in self.rules:
            if not rule.matches(method, path):
                continue
            rule.fired += 1
            if rule.delay_seconds:
                await asyncio.sleep(rule.delay_seconds)
            if rule.status is None:
                return None
            headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
            message = rule.message or DEFAULT_MESSAGES.get(rule.status, f"HTTP {rule.status}")
            return codat_error(rule.status, message, headers)
        return None
