"""Synctrack's exceptions (one hierarchy) and the error codes of its HTTP API (one enumeration).

Every exception Synctrack raises on purpose derives from `SynctrackError`; each is defined beside the
code that raises it and docstrings say when. What a client sees is decided in one place: `ApiError`
is answered as it is, and the web app's one exception handler (`service/app.py`) maps the few other
errors that can reach a request to an `ApiError`. `service/common/errors.py` writes every error body.

    SynctrackError
    ├── ApiError                    answered as {"error": code, "detail": detail}
    │   └── CodatError              workers/codat/errors.py
    ├── ConfigError                 the process refuses to start
    │   ├── TokenConfigError        service/security/tokens.py
    │   ├── UnsafeAuthConfig        service/security/auth_mode.py
    │   └── SchemaOutOfDate         workers/runtime/db.py
    ├── Unavailable                 a dependency is unreachable now; retrying later can succeed
    │   ├── QueueUnavailable        service/ingest/enqueue.py
    │   └── StreamUnavailable       service/stream/fanout.py
    ├── InvalidEnvelope             schemas/events.py
    ├── InvalidToken                service/security/tokens.py
    ├── UnsafeUrl                   workers/outbound/url_policy.py
    ├── ReplayBusy                  workers/ops/replay.py
    ├── ReplayJobNotFound           workers/ops/replay.py
    ├── ImportBusy                  workers/codat/import_jobs.py
    └── ImportJobNotFound           workers/codat/import_jobs.py
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    MISSING_SIGNATURE_HEADERS = "missing_signature_headers"
    INVALID_SIGNATURE = "invalid_signature"
    TIMESTAMP_OUT_OF_TOLERANCE = "timestamp_out_of_tolerance"
    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    STREAM_UNAVAILABLE = "stream_unavailable"
    NOT_FOUND = "not_found"
    INVALID_PARAMETER = "invalid_parameter"
    NOT_READY = "not_ready"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    FORBIDDEN_NETWORK = "forbidden_network"
    RATE_LIMITED = "rate_limited"
    REQUEST_TIMEOUT = "request_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    SYNC_ALREADY_IN_PROGRESS = "sync_already_in_progress"
    CODAT_AUTH_FAILED = "codat_auth_failed"
    CODAT_UNAVAILABLE = "codat_unavailable"
    CODAT_ERROR = "codat_error"
    CONFLICT = "conflict"
    NOT_RECONNECTABLE = "not_reconnectable"
    INVALID_URL = "invalid_url"
    SUBSCRIPTION_DISABLED = "subscription_disabled"


class SynctrackError(Exception):
    """The base of every exception Synctrack raises on purpose (anything else is a bug or a library's)."""


class ConfigError(SynctrackError):
    """Raised at start when the settings or the database cannot work; the message says what to fix."""


class Unavailable(SynctrackError):
    """Raised when a service Synctrack depends on (Redis) cannot be reached now; a retry later can succeed."""


class ApiError(SynctrackError):
    """Raised by any handler to answer with ``{"error": code, "detail": detail}`` and `status`.

    `detail` is shown to the caller, so it never holds a secret.
    """

    def __init__(self, status: int, code: ErrorCode, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.code.value, "detail": self.detail}
