"""`error_response`: the one place an error body is written, for handlers and middleware alike.

Every error a client of the web process sees is ``{"error": <ErrorCode>, "detail": <sentence>}`` with
the status and headers of an `ApiError`: the app's exception handler, the auth middleware, the header
limits and the webhook receiver all answer through this function, so the shape cannot drift. No error is
worth caching: every one says ``Cache-Control: no-store``.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from schemas.errors import ApiError

NO_STORE = "no-store"
"""The `Cache-Control` of every `/v1/*` answer and every error."""


def error_response(error: ApiError) -> JSONResponse:
    """The response that answers `error`: its body, status and headers (e.g. `Retry-After`), never cached."""
    return JSONResponse(error.body(), status_code=error.status, headers={"Cache-Control": NO_STORE, **error.headers})
