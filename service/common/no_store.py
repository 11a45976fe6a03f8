"""`NoStoreMiddleware`: no answer of the API is kept by a browser or a proxy cache.

API answers hold customers' data, and `POST /v1/tokens` answers with a bearer token: every `/v1/*` answer says
``Cache-Control: no-store``, successes, errors and preflights alike, unless it says otherwise itself (error bodies
carry it wherever they are written, `service/common/errors.py`; the stream among its own headers).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/v1/"
NO_STORE = "no-store"
"""The `Cache-Control` of every `/v1/*` answer and every error."""
_HEADER = (b"cache-control", NO_STORE.encode())


class NoStoreMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    message = {**message, "headers": [*headers, _HEADER]}
            await send(message)

        await self.app(scope, receive, send_no_store)
