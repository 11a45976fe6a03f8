"""The admin page's company picker in Debian's Chromium against a real `synctrack dev`: a company Codat deleted
is hidden unless asked for (or named in the address), and marked as deleted when shown.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboard.test_dashboard_browser import post_webhook
from tests.support.builders import company_event, connection_event
from tests.support.services import wait_for

pytestmark = pytest.mark.browser


def test_the_company_picker_hides_deleted_companies_unless_asked(service: str, open_page: Any) -> None:
    from playwright.sync_api import expect

    alive, gone = str(uuid.uuid4()), str(uuid.uuid4())
    post_webhook(service, company_event(company_id=alive, name="Heron Books", minutes=10**6))
    post_webhook(service, company_event(company_id=gone, name="Closed Cafe", minutes=10**6))
    post_webhook(service, connection_event(company_id=alive, connection_id=str(uuid.uuid4()), minutes=10))
    post_webhook(service, connection_event(company_id=gone, connection_id=str(uuid.uuid4()), minutes=10))
    post_webhook(service, company_event("company.deleted", company_id=gone, name="Closed Cafe", minutes=10**6 + 1))

    def deleted() -> bool:
        import httpx

        companies = httpx.get(f"{service}/v1/companies", params={"limit": 500}, timeout=10).json()["items"]
        return any(c["id"] == gone and c["deleted_at"] for c in companies)

    wait_for(deleted, message="the company deletion folded")

    page, steps = open_page(f"{service}/?company={alive}")
    picker = page.get_by_label("Company")
    expect(picker).to_have_value(alive)
    expect(picker.locator(f'option[value="{alive}"]')).to_have_count(1)
    expect(picker.locator(f'option[value="{gone}"]')).to_have_count(0)
    steps.shot("deleted-company-hidden")

    page.get_by_label("Show deleted companies").check()
    expect(picker.locator(f'option[value="{gone}"]')).to_have_text("Closed Cafe (0 connections) — deleted")
    expect(picker).to_have_value(alive)  # asking for deleted companies does not switch company
    steps.shot("deleted-company-shown")

    page.goto(f"{service}/?company={gone}")
    expect(page.get_by_label("Show deleted companies")).not_to_be_checked()
    expect(page.get_by_label("Company")).to_have_value(gone)  # named in the address: shown even unticked
    steps.shot("deleted-company-named")
