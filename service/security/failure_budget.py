"""Per-source limits on failed requests (bad signatures, bad tokens), in this process's memory.

A token bucket per source: each failure takes a token, `per_minute` come back per minute, and a source with none
left gets 429 `rate_limited`. Only failures count, so a genuine request is never limited; the least recently used
buckets are dropped beyond `max_sources`. The limit is per web process.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_SOURCES = 10_000


class FailureLimiter:
    """Token buckets keyed by source. Not thread-safe: used from the event loop only."""

    def __init__(
        self,
        per_minute: int,
        max_sources: int = DEFAULT_MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens regained per second
        self.max_sources = max_sources
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, when updated)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, updated = self.buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - updated) * self.rate)

    def retry_after(self, key: str) -> int | None:
        """Whole seconds until `key` may fail again; None when it is not limited."""
        if not self.enabled or key not in self.buckets:
            return None
        tokens = self._tokens(key, self.clock())
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self.rate))

    def charge(self, key: str) -> bool:
        """Record one failure from `key`; True when this failure used up its budget (worth one log line)."""
        if not self.enabled:
            return False
        now = self.clock()
        left = self._tokens(key, now) - 1
        self.buckets[key] = (max(0.0, left), now)
        self.buckets.move_to_end(key)
        while len(self.buckets) > self.max_sources:
            self.buckets.popitem(last=False)
        return left < 1
