"""Signing secrets and Standard Webhooks headers for outbound deliveries (Svix-compatible).

During a secret rotation `webhook-signature` carries a `v1,<base64 HMAC>` entry per valid secret, so a receiver
verifying with either the old or the new secret accepts the message. Signed by the Standard Webhooks library
(`standardwebhooks`, which svix's own `Webhook` wraps), without importing svix's whole API client.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh `whsec_…` secret (24 random bytes, base64), as Svix generates them."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@lru_cache(maxsize=1024)
def _signer(key: str) -> Webhook:
    """The signer of one secret, its base64 decoded once rather than once per delivery: a process signs with
    the same few secrets over and over."""
    return Webhook(key)


def signature_header(message_id: str, at: datetime, body: str, keys: list[str]) -> str:
    """The `webhook-signature` value for `body` sent at `at`, one `v1,` entry per secret in `keys`."""
    return " ".join(_signer(key).sign(message_id, at, body) for key in keys)


def webhook_headers(message_id: str, at: datetime, body: str, keys: list[str]) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header(message_id, at, body, keys),
        "content-type": "application/json",
        "user-agent": "Synctrack-Webhooks/1",
    }
