"""Reconnect on the dashboard, in Debian's Chromium against a real `synctrack dev` and the fake Codat in
one-time-link mode: the click asks Synctrack for a fresh link and opens exactly the URL Codat just issued
(not the dead one stored from the last webhook), the customer re-links there, and the connection turns
Linked live. An embedded page whose token lacks the `reconnect` right offers no Reconnect at all.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from service.security.tokens import TokenSigner
from tests.dashboard.test_dashboard_browser import SIGNING_KEY, card, connection_json, synctrack_with_fake_codat
from tests.support.services import wait_for

pytestmark = pytest.mark.browser


def test_reconnect_opens_the_link_codat_issues_at_the_click_and_needs_the_right(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with synctrack_with_fake_codat(tmp_path) as (base, codat):
        codat.configure(one_time_links=True, link_base_url=codat.url)
        company = codat.seed(companies=[{"name": "Alder Ironmongers", "platforms": ["xero"]}], initial_read=False)[0]
        xero = company["connections"][0]["id"]
        codat.set_status(xero, "Deauthorized")  # the customer withdrew access in Xero
        wait_for(lambda: (connection_json(base, xero) or {}).get("status") == "Deauthorized", message="deauthorized")
        stored = (connection_json(base, xero) or {})["link_url"]
        assert "otp=" in stored

        def embedded_url(*rights: str) -> str:
            token, _ = TokenSigner(SIGNING_KEY).mint(company["id"], rights, 600, time.time())
            return f"{base}/embed/companies/{company['id']}?connection={xero}&token={token}"

        # Without the right, the page says what happened but offers nothing it would be refused.
        page, steps = open_page(embedded_url("read"))
        detail, dialog = page.locator("#detail"), page.get_by_role("dialog")
        expect(detail).to_contain_text("Access to Xero was withdrawn")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        expect(detail.get_by_role("button", name="Reconnect")).to_have_count(0)
        steps.shot("no-reconnect-without-the-right")

        page.goto(embedded_url("read", "reconnect"))
        expect(detail).to_contain_text("Access to Xero was withdrawn")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        detail.get_by_role("button", name="Reconnect").click()
        expect(dialog).to_contain_text("Codat's link page for Xero")
        steps.shot("reconnect-explained")
        codat.clear_requests()
        known = {link["otp"] for link in codat.links()}
        with (
            page.expect_response(re.compile(r"/v1/connections/[^/]+/reconnect$")) as asked,
            page.context.expect_page() as opened,
        ):
            dialog.get_by_role("button", name="Open the link page").click()
        link_page = opened.value
        link_page.wait_for_url(re.compile(r"otp="))
        link_page.wait_for_load_state()
        fresh = asked.value.json()["link_url"]
        [issued] = [link for link in codat.links() if link["url"] == fresh]
        assert link_page.url == fresh != stored
        assert (issued["otp"] not in known, issued["connection_id"]) == (True, xero), "issued at the click"
        assert link_page.evaluate("window.opener") is None
        expect(link_page.locator("h1")).to_have_text("Xero is linked")
        assert [link["used_at"] is not None for link in codat.links() if link["url"] == fresh] == [True]
        api_calls = [(r["method"], r["path"], r["status"]) for r in codat.requests() if r["path"] != "/favicon.ico"]
        assert api_calls == [("GET", f"/companies/{company['id']}/connections/{xero}", 200)]
        expect(page.locator("#messages")).to_contain_text("link page for Xero opened in a new tab")
        steps.shot("link-page-opened")

        # The customer re-linked on Codat's page: Codat's webhook turns it Linked here, live.
        expect(card(page, xero).locator(".badge[data-status]")).to_have_text("Linked", timeout=15_000)
        expect(detail.get_by_role("button", name="Reconnect")).to_have_count(0)
        steps.shot("linked-again")
