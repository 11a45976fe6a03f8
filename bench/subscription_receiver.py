"""The local receiver of `bench/subscriptions.py`: verifies each webhook with `svix`, counts it, answers 204.

Run by uvicorn (`bench.subscription_receiver:app`); `RECEIVER_SECRETS` is a JSON object path -> secret.
`GET /count` answers `{"ok": n, "unique": n, "bad_signature": n}`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from svix.webhooks import Webhook, WebhookVerificationError

SECRETS = {path: Webhook(secret) for path, secret in json.loads(os.environ.get("RECEIVER_SECRETS", "{}")).items()}
seen: set[str] = set()
counts = {"ok": 0, "bad_signature": 0}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        body = json.dumps({**counts, "unique": len(seen)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    status = 204
    try:
        SECRETS[scope["path"]].verify(raw, headers)
        counts["ok"] += 1
        seen.add(headers["webhook-id"])
    except (KeyError, WebhookVerificationError):
        counts["bad_signature"] += 1
        status = 400
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
