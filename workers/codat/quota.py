"""Codat's request quota, read from the `X-Rate-Limit-Remaining`/`-Reset` headers of every answer, and honoured.

Once `Remaining` reaches 0 the next request would only earn a 429, so every further call of the client waits for
the reset, or fails at once with `codat_unavailable` and `Retry-After` when the reset is further away than
`max_wait` (`SYNCTRACK_CODAT_MAX_RETRY_AFTER_SECONDS`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import httpx

from schemas.errors import ErrorCode
from workers.codat.errors import CodatError, reset_delay


class QuotaGate:
    """Shared by every call of one client: each call reserves a request before it is sent, so calls in flight
    cannot overrun the last requests left. Answers within a window only lower the count (they may arrive out of
    order); calls sent while the count is unknown are taken off the first count that arrives."""

    def __init__(
        self,
        max_wait: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_wait, self.clock, self.sleep = max_wait, clock, sleep
        self.remaining: int | None = None
        """Requests left in this window (None: not known)."""
        self.resets_at: float | None = None
        """Unix time the window ends."""
        self.unreserved = 0
        """Calls sent while the count was unknown, not yet taken off a count."""

    def note(self, response: httpx.Response) -> None:
        """Read the quota headers of an answer."""
        remaining = response.headers.get("x-rate-limit-remaining")
        if remaining is None:
            return
        try:
            left = int(float(remaining))
        except ValueError:
            return
        reset = response.headers.get("x-rate-limit-reset")
        delay = reset_delay(reset, self.clock()) if reset else None
        if delay == 0:
            return  # an answer of a window already over: it says nothing of the current one
        resets_at = self.clock() + (delay if delay is not None else 1.0)
        same_window = self.resets_at is not None and abs(resets_at - self.resets_at) < 1.0
        if same_window and self.remaining is not None:
            self.remaining = min(self.remaining, left)
        else:
            self.remaining, self.resets_at = max(0, left - self.unreserved), resets_at
            self.unreserved = 0

    async def wait(self) -> None:
        """Before a call: reserve a request; sleep until the reset if none is left, or raise if that
        wait is longer than `max_wait`."""
        while True:
            if self.remaining is None:
                self.unreserved += 1
                return
            if self.remaining > 0:
                self.remaining -= 1
                return
            ends = self.resets_at
            delay = (ends or 0.0) - self.clock()
            if delay > self.max_wait:
                detail = f"Codat's request quota is spent for another {math.ceil(delay)} s (X-Rate-Limit-Remaining: 0)"
                raise CodatError(503, ErrorCode.CODAT_UNAVAILABLE, detail, 429, {"Retry-After": str(math.ceil(delay))})
            if delay > 0:
                await self.sleep(delay)
            if self.resets_at == ends:  # no answer has told of the next window yet: its answers will
                self.remaining = self.resets_at = None
