"""Durable, de-duplicated enqueueing of webhooks, coalesced into one Redis round trip per batch.

Each request calls `WebhookQueue.submit` and waits for its own answer. Requests that arrive while a
batch is in flight wait together and go in the next pipeline, so under load one round trip carries
many events — yet no request is answered before its own event is on the queue. One Lua
script call per batch does the whole job atomically, for each event: ``SET seen-key NX EX`` and, only if
that was new, write the message where dramatiq's RedisBroker keeps it. A duplicate never reaches the
queue; a failure leaves no seen-key behind, so Codat's retry is not mistaken for a duplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import RedisError

from schemas.errors import Unavailable
from workers.runtime.broker import fold_message, queue_keys

DEDUPE_AND_ENQUEUE = """
local ttl = ARGV[1]
local results = {}
for i = 1, #KEYS - 2 do
  local id = ARGV[2 * i]
  if redis.call('SET', KEYS[i + 2], id, 'NX', 'EX', ttl) then
    redis.call('HSET', KEYS[1], id, ARGV[2 * i + 1])
    redis.call('RPUSH', KEYS[2], id)
    results[i] = 1
  else
    results[i] = 0
  end
end
return results
"""
"""A whole batch in one script call: KEYS = (messages hash, queue list, seen key of each event),
ARGV = (ttl, then redis message id and encoded message of each event). One command per batch instead
of one per event is what halves the web process's CPU per enqueued webhook."""

MAX_BATCH = 512


class QueueUnavailable(Unavailable):
    """Raised when Redis cannot take the event: the receiver answers 503 so Codat retries."""


@dataclass(slots=True)
class _Item:
    message_id: str
    body: str
    received_at: str
    future: asyncio.Future[bool]


class WebhookQueue:
    def __init__(self, client: redis.asyncio.Redis, namespace: str, dedupe_seconds: int) -> None:
        self.client = client
        self.namespace = namespace
        self.dedupe_seconds = dedupe_seconds
        self.queue_key, self.messages_key = queue_keys(namespace)
        self._script = client.register_script(DEDUPE_AND_ENQUEUE)
        self._pending: list[_Item] = []
        self._drainer: asyncio.Task[None] | None = None

    def seen_key(self, message_id: str) -> str:
        return f"{self.namespace}:seen:{message_id}"

    async def submit(self, message_id: str, body: str, received_at: str) -> bool:
        """Enqueue once per message id. True if enqueued now, False if it was seen before.

        Raises `QueueUnavailable` if Redis did not take it.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(message_id, body, received_at, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results = await self._run(batch)
            except (RedisError, OSError) as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(QueueUnavailable(str(exc)))
                continue
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(QueueUnavailable(str(result)))
                else:
                    item.future.set_result(bool(result))

    async def _run(self, batch: list[_Item]) -> list[object]:
        keys = [self.messages_key, self.queue_key]
        args = [str(self.dedupe_seconds)]
        for item in batch:
            redis_id, encoded = fold_message(item.message_id, item.body, item.received_at)
            keys.append(self.seen_key(item.message_id))
            args += [redis_id, encoded]
        # redis-py's Script loads the script again by itself if Redis restarted (NOSCRIPT).
        return list(await self._script(keys=keys, args=args))
