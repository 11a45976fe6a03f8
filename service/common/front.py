"""`FrontApp`: Starlette, with a few routes served in front of its middleware stack.

The webhook route is the web process's hottest path, and of the app's general layers only the header
limits and the query-token scrub apply to it: it has no CORS preflight from Codat, no bearer token
(the signature is its authentication, checked by the receiver) and no `/v1` body rule. So it is given
its own short stack of exactly those layers (`service/security/middleware.py: webhook_middleware`) and
reached before the router and every other layer are walked. A request that one of the skipped layers
would change — one carrying an `Origin` while CORS is configured — takes the general stack as before.
The route stays in the router too, so 405s, the access rules and the OpenAPI document see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from service.common.direct import route_path


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
