"""Bearer tokens: who a request is (`Principal`), from one of two kinds of token.

Admin tokens are high-entropy random strings known only by their ``sha256:<hex>`` hashes. Company-scoped tokens
are ``st1.<base64url JSON claims>.<HMAC-SHA256>`` under a key derived from `SYNCTRACK_TOKEN_SIGNING_KEY`; they
expire and can be revoked (`service/security/revocation.py`). Every secret is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

from schemas.errors import ApiError, ConfigError, ErrorCode, SynctrackError
from schemas.ids import ID_SYNTAX, is_valid_id
from schemas.settings import Settings
from schemas.tokens import Right, TokenOut

RIGHTS: tuple[str, ...] = get_args(Right)
SCOPED_PREFIX = "st1."
ADMIN_PREFIX = "sta_"
HASH_PREFIX = "sha256:"
MIN_ADMIN_TOKEN_LENGTH = 32  # a fast unsalted hash is only sound for high-entropy tokens
MIN_SIGNING_KEY_LENGTH = 32
MAX_TOKEN_LENGTH = 4096
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_CONTEXT = b"synctrack company-scoped token v1"


class InvalidToken(SynctrackError):
    """Raised when a bearer token is malformed, unknown, wrongly signed or expired; the message says which."""


class TokenConfigError(ConfigError, ValueError):
    """Raised when the token settings themselves are unusable (a malformed hash, a short signing key)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling. `company_id` is None for admins (every company); `rights` bound a scoped token."""

    kind: Literal["admin", "company", "local"]
    subject: str
    """Safe to log and to record as an audit actor: never the token itself."""
    company_id: str | None = None
    rights: frozenset[str] = field(default_factory=frozenset)
    token_id: str | None = None
    expires_at: int | None = None
    """Unix seconds: when a company token expires (an open stream ends then)."""

    @property
    def is_admin(self) -> bool:
        return self.company_id is None

    def can(self, right: str) -> bool:
        return self.is_admin or right in self.rights


LOCAL_DEVELOPER = Principal("local", "local")
"""The caller when authentication is off (`synctrack dev` on localhost): full rights."""


def hash_token(token: str) -> str:
    """The value to put in `SYNCTRACK_ADMIN_TOKEN_HASHES` for `token`."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_admin_token() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


class AdminTokens:
    """The configured admin token hashes; `check` finds which one (if any) a presented token has."""

    def __init__(self, hashes: Iterable[str]) -> None:
        self.digests: list[bytes] = []
        for configured in hashes:
            value = configured.strip().lower()
            if not _HASH.match(value):
                raise TokenConfigError(
                    "SYNCTRACK_ADMIN_TOKEN_HASHES holds an entry that is not sha256:<64 hex digits>; "
                    "make each with `synctrack token hash`"
                )
            self.digests.append(bytes.fromhex(value.removeprefix(HASH_PREFIX)))

    def check(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        for configured in self.digests:  # every hash is compared, whether or not one matched already
            if hmac.compare_digest(digest, configured):
                found = Principal("admin", f"admin:{configured.hex()[:8]}")
        return found


@dataclass(frozen=True)
class ScopedClaims:
    company_id: str
    rights: frozenset[str]
    issued_at: int
    expires_at: int
    token_id: str

    def principal(self) -> Principal:
        subject = f"company:{self.company_id}:{self.token_id}"
        return Principal("company", subject, self.company_id, self.rights, self.token_id, self.expires_at)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Mints and verifies company-scoped tokens with one signing key."""

    def __init__(self, signing_key: str) -> None:
        if signing_key and len(signing_key) < MIN_SIGNING_KEY_LENGTH:
            raise TokenConfigError(
                f"SYNCTRACK_TOKEN_SIGNING_KEY must be at least {MIN_SIGNING_KEY_LENGTH} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        self.key = hmac.new(signing_key.encode(), _KEY_CONTEXT, hashlib.sha256).digest() if signing_key else b""

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self.key, (SCOPED_PREFIX + body).encode(), hashlib.sha256).digest())

    def mint(self, company_id: str, rights: Iterable[str], ttl_seconds: int, now: float) -> tuple[str, ScopedClaims]:
        """A token for `company_id` valid for `ttl_seconds` from `now` (unix seconds)."""
        if not self.key:
            raise TokenConfigError("SYNCTRACK_TOKEN_SIGNING_KEY is not set, so no company token can be minted")
        if not is_valid_id(company_id):
            raise ValueError(f"company_id must be one company id: {ID_SYNTAX}")
        unknown = sorted(set(rights) - set(RIGHTS))
        if unknown:
            raise ValueError(f"unknown rights {unknown}; rights are {', '.join(RIGHTS)}")
        issued = int(now)
        claims = ScopedClaims(company_id, frozenset(rights), issued, issued + int(ttl_seconds), secrets.token_hex(8))
        payload = {
            "cid": claims.company_id,
            "r": sorted(claims.rights),
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.token_id,
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{SCOPED_PREFIX}{body}.{self._sign(body)}", claims

    def verify(self, token: str, now: float) -> ScopedClaims:
        """The claims of a genuine, unexpired token. Raises InvalidToken."""
        if not self.key:
            raise InvalidToken("company tokens are not accepted: SYNCTRACK_TOKEN_SIGNING_KEY is not set")
        body, dot, signature = token.removeprefix(SCOPED_PREFIX).partition(".")
        if not dot or not body or not signature:
            raise InvalidToken("the token is malformed")
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            raise InvalidToken("the token's signature does not match (tampered, or signed with another key)")
        try:
            payload = json.loads(_unb64(body))
            claims = ScopedClaims(
                str(payload["cid"]),
                frozenset(str(r) for r in payload["r"]),
                int(payload["iat"]),
                int(payload["exp"]),
                str(payload["jti"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("the token is malformed") from None
        if not (is_valid_id(payload["cid"]) and is_valid_id(payload["jti"])):
            # Genuinely signed, but minted before ids had one syntax: it could name more than one company.
            raise InvalidToken("the token does not name one valid company")
        if now >= claims.expires_at:
            raise InvalidToken("the token has expired")
        return claims


class Authenticator:
    """Turns a presented bearer token into a `Principal`, whichever kind it is."""

    def __init__(self, admin: AdminTokens, signer: TokenSigner) -> None:
        self.admin = admin
        self.signer = signer

    def principal(self, token: str, now: float) -> Principal:
        """Raises InvalidToken with a sentence safe to show the caller."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the token is malformed")
        if token.startswith(SCOPED_PREFIX):
            return self.signer.verify(token, now).principal()
        found = self.admin.check(token)
        if found is None:
            raise InvalidToken("the token is not a known admin token")
        return found


def mint(settings: Settings, company_id: str, rights: list[str], ttl_seconds: float) -> TokenOut:
    """A company-scoped token, for `POST /v1/tokens` and `synctrack token mint`. Raises ApiError when the TTL is
    over the maximum, the company id or a right is not valid (400), or no signing key is configured (409)."""
    if ttl_seconds > settings.token_max_ttl_seconds:
        raise ApiError(
            400,
            ErrorCode.INVALID_PARAMETER,
            f"ttl_seconds is at most {int(settings.token_max_ttl_seconds)} (SYNCTRACK_TOKEN_MAX_TTL)",
        )
    try:
        token, claims = TokenSigner(settings.token_signing_key).mint(company_id, rights, int(ttl_seconds), time.time())
    except TokenConfigError as exc:
        raise ApiError(409, ErrorCode.CONFLICT, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, ErrorCode.INVALID_PARAMETER, str(exc)) from None
    return TokenOut(
        token=token,
        token_id=claims.token_id,
        company_id=company_id,
        rights=sorted(claims.rights),
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
    )
