"""`HeaderLimitMiddleware`: a request with too many or too large headers is refused with 431.

uvicorn's default HTTP parser (httptools) bounds neither, so this is where a request with a megabyte of
headers stops before any handler, logger or token check looks at them. Put a proxy in front for the
memory the server spends parsing them (nginx bounds them at 32 KB by default).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from service.common.errors import error_response

MAX_HEADERS = 100


def header_refusal(scope: Scope, max_header_bytes: int) -> ApiError | None:
    """The 431 for a request with too many or too large headers; None when they are within bounds."""
    headers = scope.get("headers", [])
    size = sum(len(name) + len(value) for name, value in headers)
    if len(headers) > MAX_HEADERS or size > max_header_bytes:
        detail = f"at most {MAX_HEADERS} headers of {max_header_bytes} bytes in all are accepted"
        return ApiError(431, ErrorCode.HEADERS_TOO_LARGE, detail)
    return None


class HeaderLimitMiddleware:
    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refused := header_refusal(scope, self.max_header_bytes)) is not None:
            await error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)
