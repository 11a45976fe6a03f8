"""The connection-management dashboard: `/` (admin view, pick a company) and
`/embed/companies/{company_id}` (one company, for embedding in a product), plus its static files.

The page is plain HTML + ES modules from `service/static/` (no build step). It reads the JSON API and
the live stream like any other client; the server only fills in three values of the HTML shell.
"""

from __future__ import annotations

import html
import os
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from service.common.services import services

STATIC_DIR = Path(__file__).with_name("static")


@cache
def _shell() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


def _policy(frame_ancestors: str) -> dict[str, str]:
    """Scripts and styles from this origin only; the page talks to this origin only."""
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors {frame_ancestors}"
    )
    return {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


def render_page(request: Request, mode: str, company_id: str = "") -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    page = (
        _shell()
        .replace("{{ROOT}}", html.escape(root))
        .replace("{{MODE}}", mode)
        .replace("{{COMPANY_ID}}", html.escape(company_id))
    )
    settings = services(request).settings
    # The admin view is never framed; the embedded view may be framed by the origins already trusted
    # for cross-origin dashboards (SYNCTRACK_CORS_ORIGINS).
    ancestors = "'self'" if mode == "admin" else " ".join(["'self'", *settings.cors_origins])
    return HTMLResponse(page, headers=_policy(ancestors))


async def admin_page(request: Request) -> Response:
    return render_page(request, "admin")


async def embed_page(request: Request) -> Response:
    return render_page(request, "embed", request.path_params["company_id"])


class DashboardFiles(StaticFiles):
    """Static files that browsers revalidate each time (cheap 304s), so an upgrade is seen at once."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


routes = [
    Route("/", admin_page, methods=["GET"]),
    Route("/embed/companies/{company_id}", embed_page, methods=["GET"]),
    Mount("/static", app=DashboardFiles(directory=STATIC_DIR), name="static"),
]
