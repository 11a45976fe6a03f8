"""The connection-management dashboard: `/` (admin view, pick a company), `/embed/companies/{company_id}` (one
company, for embedding in a product) and its static files: plain HTML and ES modules reading the JSON API and the
live stream like any other client; the server only fills in three values of the HTML shell."""

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


async def page(request: Request) -> Response:
    """The admin view, or the embedded view of the path's company. Scripts, styles and requests: this origin."""
    company_id = request.path_params.get("company_id", "")
    mode = "embed" if company_id else "admin"
    root = request.scope.get("root_path", "").rstrip("/")
    shell = (
        _shell()
        .replace("{{ROOT}}", html.escape(root))
        .replace("{{MODE}}", mode)
        .replace("{{COMPANY_ID}}", html.escape(company_id))
    )
    # The admin view is never framed; the embedded view may be framed by the origins already trusted
    # for cross-origin dashboards (SYNCTRACK_CORS_ORIGINS).
    ancestors = " ".join(["'self'", *services(request).settings.cors_origins]) if company_id else "'self'"
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors {ancestors}"
    )
    headers = {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
    return HTMLResponse(shell, headers=headers)


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
    Route("/", page, methods=["GET"]),
    Route("/embed/companies/{company_id}", page, methods=["GET"]),
    Mount("/static", app=DashboardFiles(directory=STATIC_DIR), name="static"),
]
