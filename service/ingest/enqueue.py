"""`WebhookQueue`: durable, de-duplicated enqueueing, coalesced into one Redis script call per batch and lane.

Requests that arrive while a batch is in flight go together in the next one, yet none is answered before its own
event is on the queue. A duplicate never reaches the queue; a failure leaves no seen-key behind, so Codat's retry is
not mistaken for a duplicate. Live and backfill lanes share the de-duplication keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import redis.asyncio
from redis.exceptions import RedisError

from schemas.errors import Unavailable
from workers.runtime.broker import FOLD_BACKFILL_ACTOR, FOLD_BATCH_ACTOR
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE, EnqueueUnseen

MAX_BATCH = 512


class QueueUnavailable(Unavailable):
    """Raised when Redis cannot take the event: the receiver answers 503 so Codat retries."""


@dataclass(slots=True)
class _Item:
    message_id: str
    body: str
    received_at: str
    backfill: bool
    future: asyncio.Future[bool]


class WebhookQueue:
    def __init__(self, client: redis.asyncio.Redis, namespace: str, dedupe_seconds: int) -> None:
        self.client = client
        self.namespace = namespace
        self.dedupe_seconds = dedupe_seconds
        self._live = EnqueueUnseen(client, namespace, WEBHOOK_QUEUE, FOLD_BATCH_ACTOR, dedupe_seconds)
        self._backfill = EnqueueUnseen(client, namespace, BACKFILL_QUEUE, FOLD_BACKFILL_ACTOR, dedupe_seconds)
        self._pending: list[_Item] = []
        self._drainer: asyncio.Task[None] | None = None

    def seen_key(self, message_id: str) -> str:
        return f"{self.namespace}:seen:{message_id}"

    async def submit(self, message_id: str, body: str, received_at: str, backfill: bool = False) -> bool:
        """Enqueue once per message id (on the backfill lane if `backfill`): True if now, False if seen before.
        Raises `QueueUnavailable` if Redis did not take it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(message_id, body, received_at, backfill, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            lanes = [
                (self._live, [item for item in batch if not item.backfill]),
                (self._backfill, [item for item in batch if item.backfill]),
            ]
            await asyncio.gather(*(self._run(enqueue, items) for enqueue, items in lanes if items))

    async def _run(self, enqueue: EnqueueUnseen, items: list[_Item]) -> None:
        """Enqueue `items` in one script call and answer each one's caller."""
        try:
            results = await enqueue(
                [
                    (self.seen_key(item.message_id), orjson.dumps([item.message_id, item.body, item.received_at]))
                    for item in items
                ]
            )
        except (RedisError, OSError) as exc:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(QueueUnavailable(str(exc)))
            return
        for item, result in zip(items, results, strict=True):
            if not item.future.done():
                item.future.set_result(bool(result))
