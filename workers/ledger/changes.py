"""The change feed: what the fold changed, published to a Redis Stream for every web process. Each entry's `data`
is the API's Connection or Sync object (or an object holding it) plus the causing `event_id`, and `received_at`
(unix seconds) when a received webhook caused it, so the web process can measure the latency."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis import Redis

from schemas.json_codec import dumps
from workers.ledger.durations import Timing
from workers.ledger.fold import Change, ConnectionSlice
from workers.ledger.views import Assessment, connection_out, sync_out

INITIAL_READ_COMPLETED = "connection.initial_read_completed"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    name: str
    company_id: str
    connection_id: str
    data: dict[str, Any]

    def fields(self) -> dict[str, str]:
        return {
            "event": self.name,
            "company_id": self.company_id,
            "connection_id": self.connection_id,
            "data": dumps(self.data),
        }


def stream_key(namespace: str) -> str:
    return f"{namespace}:changes"


def render_changes(
    changes: list[Change],
    slices: dict[str, ConnectionSlice],
    company_names: Mapping[str, str | None],
    assessed: Mapping[str, Assessment],
    timings: Mapping[str, Timing] | None = None,
) -> list[FeedEntry]:
    """Fold changes as feed entries, from the slices the fold wrote, each connection's assessment and each sync's
    timing."""
    entries = []
    for change in changes:
        state = slices[change.connection_id]
        conn = state.connection
        if change.sync is None:
            active = any(s.phase == "active" for s in state.syncs.values())
            data = connection_out(conn, company_names.get(conn.company_id), active, assessed[conn.id]).model_dump(
                mode="json"
            )
            if change.kind == INITIAL_READ_COMPLETED:
                data = {"connection": data}
        else:
            data = sync_out(change.sync, (timings or {}).get(change.sync.id)).model_dump(mode="json")
        data["event_id"] = change.event_id
        entries.append(FeedEntry(change.kind, conn.company_id, conn.id, data))
    return entries


class ChangeFeed:
    """Publishes feed entries to the Redis Stream `{namespace}:changes`, kept by count (XADD MAXLEN ~) and by age
    (XTRIM MINID ~ `retention_seconds`), whichever keeps less (approximately: never fewer)."""

    def __init__(self, redis: Redis, namespace: str, max_changes: int, retention_seconds: float = 0) -> None:
        self.redis = redis
        self.key = stream_key(namespace)
        self.max_changes = max_changes
        self.retention_seconds = retention_seconds

    def publish(self, entries: list[FeedEntry], received_at: Mapping[str, float] | None = None) -> None:
        """Add `entries` to the stream; `received_at`: the receipt time (unix seconds) of the events by id."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for entry in entries:
            fields = entry.fields()
            received = received_at.get(entry.data.get("event_id", "")) if received_at else None
            if received is not None:
                fields["received_at"] = repr(received)
            pipe.xadd(self.key, fields, maxlen=self.max_changes, approximate=True)  # type: ignore[arg-type]
        if self.retention_seconds > 0:
            oldest_ms = int((time.time() - self.retention_seconds) * 1000)
            pipe.xtrim(self.key, minid=f"{oldest_ms}-0", approximate=True)
        pipe.execute()
