"""`error_response`: the one place an error body ``{"error": <ErrorCode>, "detail": <sentence>}`` is written,
for handlers and middleware alike, so the shape cannot drift. No error is worth caching.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from schemas.errors import ApiError

NO_STORE = "no-store"
"""The `Cache-Control` of every `/v1/*` answer and every error."""


def error_response(error: ApiError) -> JSONResponse:
    """The response that answers `error`: its body, status and headers (e.g. `Retry-After`), never cached."""
    return JSONResponse(error.body(), status_code=error.status, headers={"Cache-Control": NO_STORE, **error.headers})
