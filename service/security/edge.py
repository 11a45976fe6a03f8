"""`EdgeMiddleware`: what every request meets first, before CORS, authentication or any handler.

- Too many or too large headers are refused with 431: uvicorn's default parser (httptools) bounds neither.
- No `/v1/*` answer is kept by a browser or a proxy cache (they hold customers' data and bearer tokens):
  each says ``Cache-Control: no-store`` unless it says otherwise itself; error bodies carry it wherever written.

`body_refusal` (applied by `AuthMiddleware`, after authentication): a `/v1/*` request that carries a body must say
it is JSON, or it is 415. A browser lets any page send text, form or multipart bodies anywhere without a CORS
preflight; a JSON body needs one, so refusing every other media type keeps such pages out of the API.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from service.common.errors import NO_STORE, error_response

API_PREFIX = "/v1/"
_HEADER = (b"cache-control", NO_STORE.encode())
MAX_HEADERS = 100


def header_refusal(scope: Scope, max_header_bytes: int) -> ApiError | None:
    """The 431 for a request with too many or too large headers; None when they are within bounds."""
    headers = scope.get("headers", [])
    size = sum(len(name) + len(value) for name, value in headers)
    if len(headers) > MAX_HEADERS or size > max_header_bytes:
        detail = f"at most {MAX_HEADERS} headers of {max_header_bytes} bytes in all are accepted"
        return ApiError(431, ErrorCode.HEADERS_TOO_LARGE, detail)
    return None


def body_refusal(scope: Scope) -> ApiError | None:
    """The 415 for a `/v1/*` request whose body is not JSON; None for any other request."""
    headers = scope.get("headers", [])
    has_body = any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0"))
        for name, value in headers
    )
    content_type = next((value for name, value in headers if name == b"content-type"), b"")
    media = content_type.decode("latin-1").split(";")[0].strip().lower()
    is_json = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    if scope["path"].startswith(API_PREFIX) and has_body and not is_json:
        return ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "a request body must be sent as application/json")
    return None


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (refused := header_refusal(scope, self.max_header_bytes)) is not None:
            await error_response(refused)(scope, receive, send)
            return
        if not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    message = {**message, "headers": [*headers, _HEADER]}
            await send(message)

        await self.app(scope, receive, send_no_store)
