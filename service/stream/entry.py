"""`StreamEntry`: `GET /v1/stream` as a plain ASGI app, served in front of the middleware (`service/common/front.py`).

A stream request lives as long as its client stays, and every layer between the server and the
handler keeps a suspended frame (and often a wrapped `send`) for all that time: Starlette's app and
exception middleware, each security layer, the router, the route and its request/response adapter.
Served in front, the stream runs behind the same header limits, authentication and body rule as any
route, checked in one frame (`service/security/middleware.py: GuardedRoute`), with the same answers: an
error the handler raises goes to the app's own exception handler (`on_error`, the one map to error
bodies), and whatever that handler does not answer is the server's 500 (`guarded_middleware` says why).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import SynctrackError
from service.stream.routes import stream

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

METHODS = ("GET", "HEAD")
"""What the route answers (Starlette adds HEAD to a GET route)."""


class StreamEntry:
    def __init__(self, on_error: ErrorHandler) -> None:
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response: ASGIApp = await stream(request)
        except (SynctrackError, HTTPException) as exc:  # what the app's exception handler answers
            response = await self.on_error(request, exc)
        # Neither the request nor the caller is needed once the stream is open (the principal chose its
        # company filter); both would otherwise be held for as long as the client stays.
        del request
        scope.get("state", {}).pop("principal", None)
        await response(scope, receive, send)
