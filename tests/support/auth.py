"""Tokens for tests: one admin token (and the settings or environment that accept it) and company tokens.

Every test that calls `/v1/*` authenticates like a real client: `TestClient(app, headers=ADMIN_HEADERS)`
in process, `AUTH_ENV` for `synctrack web|dev` subprocesses. `embedded_settings` (tests/conftest.py)
already carries `AUTH_SETTINGS`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from service.security.tokens import TokenSigner, hash_token

ADMIN_TOKEN = "sta_test-admin-token-3f9c2b7d41e84a6c9b1d"
ADMIN_TOKEN_HASH = hash_token(ADMIN_TOKEN)
SIGNING_KEY = "test-signing-key-8d1f4e2a9c7b6053e1f2a3b4c5d6e7f8"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AUTH_SETTINGS: dict[str, object] = {"admin_token_hashes": [ADMIN_TOKEN_HASH], "token_signing_key": SIGNING_KEY}
"""`Settings(**AUTH_SETTINGS)` / `settings.model_copy(update=AUTH_SETTINGS)`."""
AUTH_ENV = {"SYNCTRACK_ADMIN_TOKEN_HASHES": ADMIN_TOKEN_HASH, "SYNCTRACK_TOKEN_SIGNING_KEY": SIGNING_KEY}
"""The same, for `synctrack` subprocesses."""


def company_token(
    company_id: str,
    rights: Iterable[str] = ("read",),
    *,
    ttl_seconds: int = 3600,
    key: str = SIGNING_KEY,
    now: float | None = None,
) -> str:
    token, _ = TokenSigner(key).mint(company_id, rights, ttl_seconds, time.time() if now is None else now)
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
