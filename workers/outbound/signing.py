"""Signing secrets and Standard Webhooks headers for outbound deliveries (Svix-compatible), signed by the
`standardwebhooks` library. During a secret rotation `webhook-signature` carries one `v1,` entry per valid secret,
so a receiver verifying with either the old or the new secret accepts the message.
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
    """The signer of one secret, its base64 decoded once: a process signs with the same few secrets."""
    return Webhook(key)


def webhook_headers(message_id: str, at: datetime, body: str, keys: list[str]) -> dict[str, str]:
    """The headers of `body` sent at `at`, its signature one `v1,` entry per secret in `keys`."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(_signer(key).sign(message_id, at, body) for key in keys),
        "content-type": "application/json",
        "user-agent": "Synctrack-Webhooks/1",
    }
