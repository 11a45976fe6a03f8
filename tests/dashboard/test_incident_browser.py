"""A platform incident on the dashboard, in Debian's Chromium against a real `synctrack dev`: when Xero reads fail for
many companies at once, a company's embedded page (opened with its own token) shows a banner over its connections
saying Xero is having problems and nothing needs doing, and each affected card asks only to wait; a company not
affected sees no banner; when Xero recovers the banner goes, live.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.security.tokens import TokenSigner
from tests.dashboard.test_dashboard_browser import SIGNING_KEY, connection_json, post_webhook, synctrack_dev
from tests.support.builders import BASE_TIME, connection_event, read_completed
from tests.support.services import wait_for

pytestmark = pytest.mark.browser

BANNER = "Xero is having problems across many companies. Nothing you need to do: syncing resumes once it recovers."


def now_minutes() -> float:
    """The builders' `minutes` of now."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60


def xero_link(connection_id: str, company_id: str) -> dict[str, Any]:
    body = connection_event(
        connection_id=connection_id, company_id=company_id, platform="Xero", minutes=now_minutes() - 30
    )
    body["payload"]["connection"].update(integrationKey="gbol", sourceType="Accounting")
    return body


def test_a_company_sees_a_banner_while_its_platform_has_an_incident(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    companies = [str(uuid.uuid4()) for _ in range(4)]
    spared = companies[3]
    connections = {str(uuid.uuid4()): company for company in companies[:3] for _ in range(2)}
    calm = str(uuid.uuid4())
    with synctrack_dev(tmp_path, SYNCTRACK_INCIDENT_AUTO_REFRESH="false") as (base, _):
        for conn, company in [*connections.items(), (calm, spared)]:
            post_webhook(base, xero_link(conn, company))
        wait_for(lambda: all(connection_json(base, c) for c in [*connections, calm]), message="the links folded")
        minutes = now_minutes()
        for conn, company in connections.items():
            failed = [("invoices", "FetchError")]
            post_webhook(base, read_completed(failed, connection_id=conn, company_id=company, minutes=minutes))
        fine = [("invoices", "Complete")]
        post_webhook(base, read_completed(fine, connection_id=calm, company_id=spared, minutes=minutes))

        def incident_open() -> bool:
            listed = httpx.get(f"{base}/v1/platforms/incidents?status=open", timeout=10).json()["items"]
            return len(listed) == 1

        wait_for(incident_open, timeout=30, message="an open incident")

        def embedded(company: str) -> str:
            token, _ = TokenSigner(SIGNING_KEY).mint(company, ["read", "refresh"], 600, time.time())
            return f"{base}/embed/companies/{company}?token={token}"

        page, steps = open_page(embedded(companies[0]))
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        banner = page.locator("#incident-banner")
        expect(banner).to_be_visible()
        expect(banner).to_have_text(BANNER)
        expect(banner).to_have_attribute("role", "status")
        cards = page.locator("li.connection")
        expect(cards).to_have_count(2)
        for index in range(2):
            expect(cards.nth(index).locator(".health-words")).to_have_text("Platform having problems")
            expect(cards.nth(index).locator(".next-action")).to_have_text("Wait")
            expect(cards.nth(index).locator(".next-action")).to_be_disabled()
        # The banner sits over the connections, not beside one of them.
        banner_box, list_box = banner.bounding_box(), page.locator("#connection-list").bounding_box()
        assert banner_box is not None and list_box is not None and banner_box["y"] < list_box["y"]
        steps.shot("banner")

        page.goto(embedded(spared))
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        expect(cards).to_have_count(1)
        expect(cards.first.locator(".health-words")).to_have_text("Working")
        expect(banner).to_be_hidden()
        steps.shot("no-banner-for-a-company-not-affected")

        page.goto(embedded(companies[0]))
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        expect(banner).to_have_text(BANNER)
        page.evaluate("window.sameDocument = true")

        # Xero recovers: every connection reads invoices and more again, and the banner goes without a reload.
        minutes = now_minutes()
        recovered = [(data_type, "Complete") for data_type in ("invoices", "accounts", "bills", "customers")]
        for conn, company in connections.items():
            post_webhook(base, read_completed(recovered, connection_id=conn, company_id=company, minutes=minutes))
        expect(banner).to_be_hidden(timeout=30_000)
        expect(cards.first.locator(".health-words")).to_have_text("Working")
        assert page.evaluate("window.sameDocument") is True, "the page reloaded"
        steps.shot("recovered")
