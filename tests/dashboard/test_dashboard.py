"""`service/dashboard/page.py`: the pages and static files of the dashboard, served by the app itself.

The page's behaviour is tested in a real browser (`test_dashboard_browser.py`); here, what the server
promises: the shell, its security headers, and every module the page imports.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.dashboard.page import STATIC_DIR

IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["'](\./[^"']+)["']""", re.MULTILINE)


@pytest.fixture
def client(embedded_settings: Settings) -> Iterator[TestClient]:
    settings = embedded_settings.model_copy(update={"cors_origins": ["https://app.example"]})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_admin_page_is_the_shell_with_its_module_and_may_not_be_framed(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-mode="admin"' in response.text
    assert '<script type="module" src="/static/dashboard.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert policy.endswith("frame-ancestors 'self'")
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_embedded_page_names_its_company_escaped_and_may_be_framed_by_trusted_origins(client: TestClient) -> None:
    response = client.get('/embed/companies/a"><img src=x onerror=alert(1)>')
    assert response.status_code == 200
    assert "<img" not in response.text
    assert 'data-company-id="a&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in response.text
    assert 'data-mode="embed"' in response.text
    assert response.headers["content-security-policy"].endswith("frame-ancestors 'self' https://app.example")


def test_the_page_is_served_under_the_root_path_it_is_mounted_at(embedded_settings: Settings) -> None:
    with TestClient(create_app(embedded_settings), root_path="/synctrack") as client:
        text = client.get("/").text
    assert 'data-root="/synctrack"' in text
    assert 'href="/synctrack/static/dashboard.css"' in text


def test_every_module_the_page_imports_is_served_as_javascript(client: TestClient) -> None:
    pending, seen = ["dashboard.js"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert "javascript" in response.headers["content-type"], name
        assert response.headers["cache-control"] == "no-cache"
        pending.extend(path.removeprefix("./") for path in IMPORT.findall(response.text))
    shipped = {path.name for path in STATIC_DIR.glob("*.js")}
    assert seen == shipped, f"modules shipped but never imported: {shipped - seen}"


def test_the_stylesheet_is_served(client: TestClient) -> None:
    response = client.get("/static/dashboard.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


def test_an_unknown_static_file_is_a_404(client: TestClient) -> None:
    assert client.get("/static/nope.js").status_code == 404
