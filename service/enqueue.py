"""Durable, de-duplicated enqueueing of webhooks, coalesced into one Redis round trip per batch.

Each request calls `WebhookQueue.submit` and waits for its own answer. Requests that arrive while a
batch is in flight wait together and go in the next pipeline, so under load one round trip carries
many events — yet no request is answered before its own event is on the queue. Per event, one Lua
script does the whole job atomically: ``SET seen-key NX EX`` and, only if that was new, write the
message where dramatiq's RedisBroker keeps it. A duplicate never reaches the queue; a failure leaves
no seen-key behind, so Codat's retry is not mistaken for a duplicate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio
from redis.exceptions import NoScriptError, RedisError

from workers.broker import fold_message, queue_keys

DEDUPE_AND_ENQUEUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('RPUSH', KEYS[3], ARGV[1])
  return 1
end
return 0
"""

MAX_BATCH = 512


class QueueUnavailable(Exception):
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
        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            # Redis restarted (or never saw the script): load it and run those items again.
            await self.client.script_load(DEDUPE_AND_ENQUEUE)
            again = await self._pipeline([batch[i] for i in missing])
            for index, result in zip(missing, again, strict=True):
                results[index] = result
        return results

    async def _pipeline(self, items: list[_Item]) -> list[object]:
        pipe = self.client.pipeline(transaction=False)
        for item in items:
            redis_id, encoded = fold_message(item.message_id, item.body, item.received_at)
            keys = (self.seen_key(item.message_id), self.messages_key, self.queue_key)
            pipe.evalsha(self._script.sha, 3, *keys, redis_id, str(self.dedupe_seconds), encoded)
        return list(await pipe.execute(raise_on_error=False))
