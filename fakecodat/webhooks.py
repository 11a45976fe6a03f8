"""The fake's outbound webhooks: signed like Svix signs them, and faultable like real delivery.

Modes: `deliver` (send now, in order), `drop` (record and never send — what reconciliation must
repair), `hold` (keep until `release`, which can send them in reverse or shuffled order). Each
message can be sent `duplicates` extra times with the same `webhook-id`, and any delivered message
can be redelivered on request — the at-least-once, unordered delivery Codat's documentation warns of.
A failed attempt (no 2xx) is retried a few times, quickly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from svix.webhooks import Webhook

log = logging.getLogger("fakecodat.webhooks")

Mode = Literal["deliver", "drop", "hold"]
RETRY_DELAYS = (0.2, 1.0, 3.0)
KEEP_MESSAGES = 10_000
"""Messages remembered (for the log and redelivery); older ones are forgotten so a long demo stays small."""


@dataclass
class Message:
    id: str
    event_type: str
    body: str
    status: str = "queued"
    """`queued`, `held`, `dropped`, `delivered`, `failed`, `no_receiver`."""
    attempts: int = 0
    response_status: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "response_status": self.response_status,
            "body": json.loads(self.body),
        }


@dataclass
class Deliverer:
    receiver_url: str | None
    secret: str
    mode: Mode = "deliver"
    duplicates: int = 0
    messages: list[Message] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)
    _queue: asyncio.Queue[Message] | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="fakecodat-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def emit(self, event_type: str, payload: dict[str, Any], generated_at: datetime) -> Message:
        """Build a Codat envelope and deliver, drop or hold it according to the mode."""
        envelope = {
            "id": str(uuid.uuid4()),
            "eventType": event_type,
            "generatedDate": iso(generated_at),
            "payload": payload,
        }
        message = Message(id=f"msg_{uuid.uuid4().hex}", event_type=event_type, body=json.dumps(envelope))
        self.messages.append(message)
        del self.messages[:-KEEP_MESSAGES]
        if self.mode == "drop":
            message.status = "dropped"
        elif self.mode == "hold":
            message.status = "held"
            self.held.append(message)
        else:
            self._enqueue(message, 1 + self.duplicates)
        return message

    def release(self, order: Literal["fifo", "reverse", "shuffle"] = "fifo") -> int:
        """Send every held message, in the order asked for; returns how many."""
        batch, self.held = self.held, []
        if order == "reverse":
            batch.reverse()
        elif order == "shuffle":
            random.shuffle(batch)
        for message in batch:
            message.status = "queued"
            self._enqueue(message, 1 + self.duplicates)
        return len(batch)

    def redeliver(self, ids: list[str] | None = None) -> int:
        """Send again (same `webhook-id`) the delivered messages named, or all of them."""
        chosen = [m for m in self.messages if m.status == "delivered" and (ids is None or m.id in ids)]
        for message in chosen:
            self._enqueue(message, 1)
        return len(chosen)

    def _enqueue(self, message: Message, copies: int) -> None:
        assert self._queue is not None, "Deliverer.start() must run inside the server's event loop first"
        for _ in range(copies):
            self._queue.put_nowait(message)

    async def _run(self) -> None:
        assert self._queue is not None
        async with httpx.AsyncClient(timeout=15) as client:
            while True:
                message = await self._queue.get()
                try:
                    await self._send(client, message)
                except Exception:  # a fake must keep delivering whatever one message did
                    log.exception("msg=webhook_send_failed id=%s", message.id)

    async def _send(self, client: httpx.AsyncClient, message: Message) -> None:
        if not self.receiver_url:
            message.status = "no_receiver"
            return
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            message.attempts += 1
            now = datetime.fromtimestamp(int(time.time()), UTC)
            headers = {
                "webhook-id": message.id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(self.secret).sign(message.id, now, message.body),
                "content-type": "application/json",
            }
            try:
                response = await client.post(self.receiver_url, content=message.body, headers=headers)
                message.response_status = response.status_code
                if 200 <= response.status_code < 300:
                    message.status = "delivered"
                    return
            except httpx.HTTPError as exc:
                log.warning("msg=webhook_attempt_failed id=%s error=%s", message.id, type(exc).__name__)
        message.status = "failed"


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")
