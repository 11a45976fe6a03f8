"""Dead letters: messages that exhausted their retries, listed, redriven (back on their queue with fresh retries,
atomically per message) or purged through dramatiq's dead-letter queue (`redis_queues.DeadLetterQueue`), which
drops them after 7 days. The fold is idempotent, so redriving twice is harmless.
"""

from __future__ import annotations

import dataclasses
import traceback
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from schemas.events import summarise_body
from schemas.storable import escape
from workers.ledger.tables import WebhookEvent
from workers.runtime.redis_queues import BACKFILL_QUEUE, WEBHOOK_QUEUE, DeadLetterQueue, store_options

RETRY_OPTIONS = ("retries", "traceback", "requeue_timestamp", "attempts", "last_error", "eta")
ERROR_CHARS = 1_000
UNREADABLE = "unknown"
"""The actor shown for a dead letter that is not a message dramatiq can decode (it can be purged, not redriven)."""


class FinalAttemptNotes(Middleware):
    """Records `attempts` and `last_error` on a message that failed for good, before dramatiq moves it to the
    dead-letter queue: the copy that dies is the one stored before its last attempt (add after Retries)."""

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or not message.failed:
            return
        actor = broker.get_actor(message.actor_name)
        throws = message.options.get("throws") or actor.options.get("throws")
        retries = int(message.options.get("retries", 0))
        # Not retried (a `throws` error, or the first attempt): Retries wrote nothing for this attempt.
        unrecorded = (throws is not None and isinstance(exception, throws)) or "traceback" not in message.options
        message.options["attempts"] = retries + 1 if unrecorded else retries
        message.options["last_error"] = f"{type(exception).__name__}: {exception}"[:ERROR_CHARS]
        if unrecorded:
            message.options["traceback"] = "".join(traceback.format_exception(exception, limit=30))
        store_options(broker, message)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    """dramatiq's Redis message id: what `redrive` and `purge` take (an event id works too)."""
    queue: str
    actor: str
    dead_at: datetime
    attempts: int
    last_error: str | None
    traceback: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    company_id: str | None = None
    connection_id: str | None = None
    replay: bool = False
    args: tuple[Any, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The fields a list shows (no traceback, no message body)."""
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("traceback", "args")}
        return shown | {"dead_at": self.dead_at.isoformat().replace("+00:00", "Z")}


def _last_line(text: str | None) -> str | None:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:ERROR_CHARS] if lines else None


def _text(value: object) -> str | None:
    """A field to show: any text a message holds, NULs and lone surrogates escaped (see `schemas.storable`)."""
    return None if value is None else escape(value if isinstance(value, str) else str(value))


def _decode(redis_id: str, raw: bytes, score: float, queue: str) -> DeadLetter:
    """The dead letter `raw` holds; whatever that is, a letter to show (an unreadable one says so)."""
    dead_at = datetime.fromtimestamp(score / 1000, UTC)
    try:
        return _read(redis_id, dramatiq.Message.decode(raw), dead_at, queue)
    except (DecodeError, AttributeError, TypeError, ValueError, IndexError) as exc:
        error = f"not a message Synctrack can read ({type(exc).__name__}); purge it"
        return DeadLetter(redis_id, queue, UNREADABLE, dead_at, 0, error)


def _read(redis_id: str, message: dramatiq.Message[Any], dead_at: datetime, queue: str) -> DeadLetter:
    options, args = message.options, tuple(message.args)
    attempts = options.get("attempts")
    first = args[0] if args else None
    event_id = first if isinstance(first, str) else None
    body = args[1] if len(args) > 1 and isinstance(args[1], str) else None
    if isinstance(first, list) and first:  # `fold_stored` (ids) or `fold_webhooks` (items): many events
        event_id = ",".join(str(i[0] if isinstance(i, list) and i else i) for i in first)
        if len(first) == 1 and isinstance(first[0], list) and len(first[0]) > 1 and isinstance(first[0][1], str):
            body = first[0][1]  # a `fold_webhooks` message of one event
    summary = summarise_body(body) if body is not None else None
    return DeadLetter(
        id=redis_id,
        queue=queue,
        actor=escape(str(message.actor_name)),
        dead_at=dead_at,
        attempts=int(options.get("retries", 0)) + 1 if attempts is None else int(attempts),
        last_error=_text(options.get("last_error") or _last_line(_text(options.get("traceback")))),
        traceback=_text(options.get("traceback")),
        event_id=_text(event_id),
        event_type=_text(summary.event_type if summary else None),
        company_id=_text(summary.company_id if summary else None),
        connection_id=_text(summary.connection_id if summary else None),
        replay=bool(args[3]) if len(args) > 3 else False,
        args=args,
    )


class DeadLetters:
    """The dead letters of the webhook lanes, live and backfill, as one list."""

    def __init__(self, redis: Redis, namespace: str, engine: Engine | None = None):
        self.engine = engine
        self.stores = {queue: DeadLetterQueue(redis, namespace, queue) for queue in (WEBHOOK_QUEUE, BACKFILL_QUEUE)}

    def count(self) -> int:
        return sum(store.count() for store in self.stores.values())

    def newest(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Newest first, over every queue."""
        ranked = [
            (score, queue, redis_id)
            for queue, store in self.stores.items()
            for redis_id, score in store.ids(0, offset + limit - 1, newest_first=True)
        ]
        return self._load(sorted(ranked, reverse=True)[offset : offset + limit])

    def get(self, ident: str) -> DeadLetter | None:
        """One dead letter by its id or by the event id it carries."""
        found = self._resolve([ident])
        return found[0] if found else None

    def redrive(self, ids: list[str] | None = None) -> list[DeadLetter]:
        """Put the selected dead letters (all when `ids` is None) back on their queue; return them."""
        readable = [letter for letter in self._resolve(ids) if letter.actor != UNREADABLE]
        return [letter for letter in readable if self.stores[letter.queue].redrive(letter.id, RETRY_OPTIONS)]

    def purge(self, ids: list[str] | None = None) -> int:
        """Delete the selected dead letters (all when `ids` is None); return how many."""
        targets = self._resolve(ids)
        return sum(
            store.purge([letter.id for letter in targets if letter.queue == queue])
            for queue, store in self.stores.items()
        )

    def _resolve(self, idents: list[str] | None) -> list[DeadLetter]:
        """The letters whose Redis id or event id is in `idents` (all when it is None)."""
        ranked = [(score, queue, redis_id) for queue, store in self.stores.items() for redis_id, score in store.ids()]
        letters = self._load(ranked, describe=False)
        if idents is None:
            return letters
        wanted = set(idents)
        return [letter for letter in letters if letter.id in wanted or letter.event_id in wanted]

    def _load(self, ranked: list[tuple[float, str, str]], describe: bool = True) -> list[DeadLetter]:
        """The letters of (death time, queue, Redis id) triples, in that order (those gone meanwhile left out)."""
        found: dict[tuple[str, str], DeadLetter] = {}
        for queue, store in self.stores.items():
            mine = [(score, redis_id) for score, q, redis_id in ranked if q == queue]
            for (score, redis_id), raw in zip(mine, store.messages([i for _, i in mine]), strict=True):
                if raw:
                    found[queue, redis_id] = _decode(redis_id, raw, score, queue)
        letters = [found[queue, redis_id] for _, queue, redis_id in ranked if (queue, redis_id) in found]
        return self._with_stored_facts(letters) if describe else letters

    def _with_stored_facts(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Fill type, company and connection from the stored event (a replay message carries no body)."""
        ids = [letter.event_id for letter in letters if letter.event_id and letter.event_type is None]
        if self.engine is None or not ids:
            return letters
        with Session(self.engine) as session:
            rows = session.exec(select(WebhookEvent).where(col(WebhookEvent.id).in_(ids))).all()
        stored = {row.id: row for row in rows}
        return [
            dataclasses.replace(
                letter, event_type=row.event_type, company_id=row.company_id, connection_id=row.connection_id
            )
            if letter.event_type is None and (row := stored.get(letter.event_id or "")) is not None
            else letter
            for letter in letters
        ]
