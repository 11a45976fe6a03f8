"""Synctrack's exceptions (one hierarchy, `SynctrackError`) and the error codes of its HTTP API (one enumeration).

Each exception lives beside the code that raises it; the web app's one exception handler answers an `ApiError` as
it stands and maps the few other errors a request can meet to one.
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
    UNKNOWN_BUNDLE = "unknown_bundle"


class SynctrackError(Exception):
    """The base of every exception Synctrack raises on purpose (anything else is a bug or a library's)."""


class ConfigError(SynctrackError):
    """Raised at start when the settings or the database cannot work; the message says what to fix."""


class Unavailable(SynctrackError):
    """Raised when a service Synctrack depends on (Redis) cannot be reached now; a retry later can succeed."""


class ApiError(SynctrackError):
    """Raised by any handler to answer with ``{"error": code, "detail": detail}`` and `status`; `detail` is shown
    to the caller, so it never holds a secret."""

    def __init__(self, status: int, code: ErrorCode, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.code.value, "detail": self.detail}
