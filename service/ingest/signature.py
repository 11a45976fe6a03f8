"""The Svix signature of a webhook, checked over the raw bytes of its body before anything decodes them.

HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` under the base64 key after ``whsec_``; `webhook-signature` lists
``v1,<base64>`` entries (several during a rotation). Unlike svix's library, nothing about the body is read until
a configured secret vouches for its bytes (so a bad non-UTF-8 body is 401, not 400). Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


class SignatureKeys:
    """The keys of the configured webhook secrets; any of them may vouch for a body."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.keys = [secret_key(secret) for secret in secrets]

    def __bool__(self) -> bool:
        return bool(self.keys)

    def verifies(self, msg_id: str, timestamp: str, signature_header: str, body: bytes) -> bool:
        """Whether any `v1` entry of `signature_header` is the signature of `body` under any key."""
        presented = [entry for entry in (decode_entry(part) for part in signature_header.split(" ")) if entry]
        if not presented:
            return False
        signed = f"{msg_id}.{timestamp}.".encode() + body
        found = False
        for key in self.keys:
            expected = hmac.digest(key, signed, "sha256")  # one call into OpenSSL, no HMAC object
            for candidate in presented:  # every pair is compared, whether or not one matched already
                found |= hmac.compare_digest(expected, candidate)
        return found


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional). Raises ValueError."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==")  # as svix reads it: padding optional
    except binascii.Error:
        raise ValueError("SYNCTRACK_WEBHOOK_SECRETS holds an entry that is not whsec_<base64>") from None
    if not key:
        raise ValueError("SYNCTRACK_WEBHOOK_SECRETS holds an empty secret")
    return key


def decode_entry(entry: str) -> bytes | None:
    """The signature bytes of one ``v1,<base64>`` entry; None for another version or a malformed entry."""
    version, comma, encoded = entry.partition(",")
    if not comma or version != SIGNATURE_VERSION:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None
