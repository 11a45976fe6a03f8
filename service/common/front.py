"""`FrontApp`: Starlette, with a few routes served in front of its middleware stack.

Two routes are served before the router and the general layers are walked, each by its own short stack
(`service/security/middleware.py`) that gives the same answers in the same order:

* the webhook route, the web process's hottest path: of the general layers only the header limits and
  the query-token scrub apply to it (no CORS preflight from Codat, no bearer token: the signature is its
  authentication, checked by the receiver; no `/v1` body rule) — `webhook_middleware`;
* the stream, whose request stays suspended in every layer it passed until its connection is parked
  (`service/stream/parked.py`), or for as long as its client stays where the server cannot park it: every
  check of the general stack, in one frame — `guarded_middleware`.

A request that a skipped layer would change — one carrying an `Origin` while CORS is configured — takes
the general stack as before. The routes stay in the router too, so 405s, the access rules and the
OpenAPI document see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send


class FrontApp(Starlette):
    def __init__(self, *, front: Mapping[tuple[str, str], ASGIApp], cors: bool, **kwargs: Any) -> None:
        """`front`: (method, path) -> the ASGI app (with its own middleware) that serves it first;
        `cors`: whether CORS is configured (then a request with an `Origin` goes the general way)."""
        super().__init__(**kwargs)
        self.front = dict(front)
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.front:
            served = self.front.get((scope["method"], route_path(scope)))
            if served is not None and not (self.cors and has_origin(scope)):
                scope["app"] = self
                await served(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def has_origin(scope: Scope) -> bool:
    return any(name == b"origin" for name, _ in scope["headers"])


def route_path(scope: Scope) -> str:
    """The path the router matches: without the mount point (`root_path`) when the server put it in."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
