"""Filling a test's ledger through the worker's own path: `handle_webhook`, one message per body.

Tests that read the ledger (the API, the stream, actions, audit) fill it this way rather than by
writing rows, so what they read is what a worker would have folded.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from schemas.settings import Settings
from workers.ingest.handle import handle_webhook
from workers.ledger.changes import ChangeFeed
from workers.runtime.db import make_engine


def fold_webhooks(
    engine: Engine, *bodies: dict[str, Any], feed: ChangeFeed | None = None, received_at: str | None = None
) -> list[str]:
    """Store and fold each body as a new webhook (received now, unless `received_at`); their message ids.

    With `feed`, the changes are announced on the change feed as a worker announces them.
    """
    ids = []
    for body in bodies:
        message_id = f"msg_{uuid.uuid4().hex}"
        handle_webhook(engine, feed, message_id, json.dumps(body), received_at or datetime.now(UTC).isoformat())
        ids.append(message_id)
    return ids


def deliver(settings: Settings, *bodies: dict[str, Any], feed: ChangeFeed | None = None) -> list[str]:
    """`fold_webhooks` into the database of `settings` (an engine opened and disposed here)."""
    engine = make_engine(settings.database_url)
    try:
        return fold_webhooks(engine, *bodies, feed=feed)
    finally:
        engine.dispose()
