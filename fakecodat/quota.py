"""Codat's request quota in the fake: `X-Rate-Limit-Limit`, `-Remaining`, `-Reset` on every answer.

Off unless `Config.quota` is set. The quota refills at the end of each `quota_window_seconds` window
(Codat's is a day); a request beyond it is answered 429 with `Retry-After` until then. `Reset` is the
Unix time of the refill, as Codat sends it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from fakecodat.world import Config


@dataclass
class Grant:
    limit: int
    remaining: int
    resets_at: float
    spent: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.remaining),
            "X-Rate-Limit-Reset": str(math.ceil(self.resets_at)),
        }

    def retry_after(self) -> int:
        return max(1, math.ceil(self.resets_at - time.time()))


@dataclass
class Quota:
    config: Config
    window_start: float = field(default_factory=time.time)
    used: int = 0

    def take(self) -> Grant | None:
        """Count one request; None while no quota is configured."""
        limit = int(self.config.quota or 0)
        if limit <= 0:
            return None
        now = time.time()
        window = max(0.1, float(self.config.quota_window_seconds))
        if now >= self.window_start + window:
            self.window_start, self.used = now, 0
        resets_at = self.window_start + window
        if self.used >= limit:
            return Grant(limit, 0, resets_at, spent=True)
        self.used += 1
        return Grant(limit, limit - self.used, resets_at, spent=False)
