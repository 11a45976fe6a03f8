"""`StreamEntry`: `GET /v1/stream` goes from the security middleware straight to the stream.

A stream request lives as long as its client stays, and every layer between the server and the
handler keeps a suspended frame (and often a wrapped `send`) for all that time: Starlette's exception
middleware, the router, the route and its request/response adapter hold ~5 KB per client and add two
calls to every change sent. This is the innermost middleware of the app: it lets every other request
through to the router unchanged, and serves the stream itself — after the same header limits, CORS and
authentication as any route (it runs inside them), with the same answers: an error the handler raises
goes to the app's own exception handler (`on_error`, the one map to error bodies), and whatever that
handler does not answer reaches Starlette's error middleware (500) as before. Other methods on the path
still go to the router (405).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import SynctrackError
from service.stream.routes import STREAM_PATH, stream

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

METHODS = frozenset({"GET", "HEAD"})
"""What the route answers (Starlette adds HEAD to a GET route)."""


def route_path(scope: Scope) -> str:
    """The path the router matches: without the mount point (`root_path`) when the server put it in."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class StreamEntry:
    def __init__(self, app: ASGIApp, on_error: ErrorHandler) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS or route_path(scope) != STREAM_PATH:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response: ASGIApp = await stream(request)
        except (SynctrackError, HTTPException) as exc:  # what the app's exception handler answers
            response = await self.on_error(request, exc)
        del request  # held for as long as the client stays otherwise
        await response(scope, receive, send)
