"""`DirectRoutes`: a few routes served by the innermost middleware, past Starlette's router.

Every layer between the middleware stack and a handler runs for every request and, for a stream, stays
suspended as long as the client does: Starlette's exception middleware, the router (which matches the
path a second time, after the authentication middleware did), the route and its request/response
adapter. For the long-lived stream that is a large share of what each client costs (`bench/stream_cost.py`),
so it is looked up here by method and path and called at once, behind every middleware of the app (header
limits, CORS, authentication) as before. (The webhook route, which needs none of the authentication layers,
is served even earlier: `service/common/front.py`.) Everything else goes on to the router unchanged. The
routes stay in the router too, so its 404 and 405 answers, the access rules and the OpenAPI document see
them; each direct app answers its own errors.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send


def route_path(scope: Scope) -> str:
    """The path the router matches: without the mount point (`root_path`) when the server put it in."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class DirectRoutes:
    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], ASGIApp]) -> None:
        """`routes`: (method, path) -> the ASGI app that serves it."""
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct = self.routes.get((scope["method"], route_path(scope)))
            if direct is not None:
                await direct(scope, receive, send)
                return
        await self.app(scope, receive, send)
