"""A connection's errors on the dashboard, in Debian's Chromium against a real `synctrack dev`: what Codat
still marks active is today's problem; what it resolved is listed with the history, not as current.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboard.test_dashboard_browser import connection_json, named, post_webhook
from tests.support.builders import connection_error, connection_event
from tests.support.services import wait_for

pytestmark = pytest.mark.browser


def test_a_resolved_error_is_listed_under_the_history_and_not_shown_as_current(service: str, open_page: Any) -> None:
    from playwright.sync_api import expect

    company, conn = str(uuid.uuid4()), str(uuid.uuid4())
    active = connection_error("401", "The bank's token has expired")
    resolved = connection_error("500", "The bank was unavailable", status="Resolved", resolved_minutes=30)
    event = connection_event(connection_id=conn, company_id=company, platform="Xero", errors=[active, resolved])
    post_webhook(service, named(event, "Orchard Cider"))
    wait_for(lambda: connection_json(service, conn), timeout=20, message="the connection folded")

    page, steps = open_page(f"{service}/?company={company}&connection={conn}")
    detail = page.locator("#detail")
    current = detail.locator('.notice[data-kind="warning"]')
    expect(current).to_contain_text("Codat reports a problem with this connection")
    expect(current.locator("li")).to_have_count(1)
    expect(current).to_contain_text("The bank's token has expired")
    expect(current).not_to_contain_text("The bank was unavailable")
    history = detail.get_by_role("list", name="Resolved problems")
    expect(history.locator("li")).to_have_count(1)
    expect(history).to_contain_text("The bank was unavailable")
    expect(history.locator("time")).to_have_attribute("datetime", resolved["resolvedOnUtc"])
    steps.shot("current-and-resolved-errors")

    # Codat resolves the last one: no problem is shown as current, both are history.
    later = connection_event(minutes=60, connection_id=conn, company_id=company, platform="Xero")
    both = [{**active, "status": "Resolved", "resolvedOnUtc": "2026-11-20T10:00:00Z"}, resolved]
    post_webhook(service, named(later, "Orchard Cider", dataConnectionErrors=both))
    expect(history.locator("li")).to_have_count(2)
    expect(detail.locator('.notice[data-kind="warning"]')).to_have_count(0)
    steps.shot("every-error-resolved")
