"""`WebhookTally`: the webhook counters, added up in memory and written once per turn of the event loop.

In prometheus-client's multiprocess mode each increment is a locked write to a memory-mapped file; one write per
label set per turn costs far less under load. The last request in flight writes what is pending before it returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from workers.runtime.metrics import event_type_label, record_webhook

log = logging.getLogger("synctrack.receiver")


class WebhookTally:
    __slots__ = ("in_flight", "_counts", "_queued")

    def __init__(self) -> None:
        self.in_flight = 0
        """Webhook requests being answered now; the counting is settled when none is left."""
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._queued = False

    def add(self, event_type: str | None, result: str, reason: str = "") -> None:
        """Count one answer: `result` is accepted, duplicate or rejected (`reason`: the error code)."""
        self._counts[event_type_label(event_type), result, reason] += 1

    def settle(self) -> None:
        """Write what is pending now if no request is in flight, else at the end of this turn of the loop."""
        if self.in_flight == 0:
            self.flush()
        elif not self._queued and self._counts:
            self._queued = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._queued = False
        counts, self._counts = self._counts, Counter()
        try:
            for (event_type, result, reason), count in counts.items():
                record_webhook(event_type, result, reason, count)
        except Exception as exc:  # metrics never decide an answer
            log.warning("msg=metrics_unavailable error=%s", type(exc).__name__)
