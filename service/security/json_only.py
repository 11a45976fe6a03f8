"""A `/v1/*` request that carries a body must say it is JSON, or it is 415 (checked by `AuthMiddleware`).

A browser lets any page send text, form or multipart bodies anywhere without a CORS preflight; a JSON body needs
one. Refusing every other media type keeps such pages out of the API. Bodiless requests pass.
"""

from __future__ import annotations

from starlette.types import Scope

from schemas.errors import ApiError, ErrorCode

API_PREFIX = "/v1/"


def media_type(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            text: str = value.decode("latin-1")
            return text.split(";")[0].strip().lower()
    return ""


def has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


def is_json(media: str) -> bool:
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def body_refusal(scope: Scope) -> ApiError | None:
    """The 415 for a `/v1/*` request whose body is not JSON; None for any other request."""
    if scope["path"].startswith(API_PREFIX) and has_body(scope) and not is_json(media_type(scope)):
        return ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "a request body must be sent as application/json")
    return None
