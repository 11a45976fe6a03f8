"""Health on the dashboard, in Debian's Chromium against a real `synctrack dev` and the fake Codat: each card leads
with its health in plain words and offers exactly its next action as its main button — Refresh for a failed data
type (which reaches the fake Codat and heals the card live), Reconnect for a disconnected connection, none for a
working one — and warns when a connection will need re-linking soon unless it syncs.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.test_dashboard_browser import (
    SYNC_SECONDS,
    card,
    connection_json,
    post_webhook,
    synctrack_with_fake_codat,
)
from tests.support.builders import BASE_TIME, connection_event, read_completed
from tests.support.services import wait_for

pytestmark = pytest.mark.browser


DAY = 24 * 60


def minutes_ago(minutes: float) -> float:
    """The builders' `minutes` of a moment `minutes` before now."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60 - minutes


def test_each_card_leads_with_its_health_and_offers_exactly_the_next_action(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with synctrack_with_fake_codat(tmp_path) as (base, codat):
        company = codat.seed(companies=[{"name": "Larkspur Joinery", "platforms": ["xero", "hsbc"]}])[0]
        ids = {c["platformName"]: c["id"] for c in company["connections"]}
        xero, hsbc = ids["Xero"], ids["HSBC"]

        def first_reads_done() -> bool:
            rows = [connection_json(base, xero), connection_json(base, hsbc)]
            return all(row and row["initial_read_completed_at"] and not row["sync_active"] for row in rows)

        wait_for(first_reads_done, timeout=30, message="the fake Codat's first reads folded")
        # Codat reports a failed read of Xero's invoices; HSBC is disconnected in Codat's portal; an old Sage
        # connection has not synced for 80 days.
        # Xero's history: three earlier links, each answered by a read of invoices four minutes later.
        on_xero = {"connection_id": xero, "company_id": company["id"]}
        for days in (3, 2, 1):
            linked_then = minutes_ago(days * DAY)
            post_webhook(
                base, connection_event("connection.reconnected", minutes=linked_then, platform="Xero", **on_xero)
            )
            post_webhook(base, read_completed([("invoices", "Complete")], minutes=linked_then + 4, **on_xero))
        failed = read_completed([("invoices", "FetchError")], connection_id=xero, company_id=company["id"])
        failed["generatedDate"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        post_webhook(base, failed)
        codat.set_status(hsbc, "Unlinked")
        sage = "0c7e1d2a-5b3c-4d6e-8f90-a1b2c3d4e5f6"
        linked = datetime.now(UTC) - timedelta(days=80)
        post_webhook(
            base,
            connection_event(
                connection_id=sage, company_id=company["id"], platform="Sage", minutes=minutes_ago(80 * 24 * 60)
            ),
        )
        wait_for(lambda: (connection_json(base, xero) or {}).get("health") == "failing", message="Xero failing")
        wait_for(lambda: (connection_json(base, hsbc) or {}).get("health") == "unlinked", message="HSBC unlinked")
        wait_for(lambda: connection_json(base, sage), message="Sage folded")

        page, steps = open_page(f"{base}/?company={company['id']}")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")

        xero_card, hsbc_card, sage_card = card(page, xero), card(page, hsbc), card(page, sage)
        # The health leads the card, in words, with Codat's reason.
        expect(xero_card.locator(".health-head").first).to_be_visible()
        assert xero_card.locator(":scope > *").first.get_attribute("class") == "health-head"
        expect(xero_card.locator(".health-words")).to_have_text("Sync failing")
        expect(xero_card.locator(".health-reason")).to_have_text(
            "Syncing invoices from Xero failed (FetchError): a refresh may fix it."
        )
        expect(xero_card.locator(".next-action")).to_have_count(1)
        expect(xero_card.locator(".next-action")).to_have_text("Refresh invoices")
        expect(hsbc_card.locator(".health-words")).to_have_text("Disconnected")
        expect(hsbc_card.locator(".next-action")).to_have_text("Reconnect")
        expect(hsbc_card.locator(".next-action")).to_be_enabled()
        expect(xero_card.get_by_role("link")).to_have_accessible_description(re.compile(r"^Sync failing"))
        # Codat deauthorizes after 90 days without a sync: 10 days left.
        risk_day = linked + timedelta(days=90)
        expect(sage_card.locator(".deauthorization-risk")).to_have_text(
            f"Will need re-linking after {risk_day.day} {risk_day:%b} unless it syncs"
        )
        expect(xero_card.locator(".deauthorization-risk")).to_have_count(0)
        # Its link opened a read that is still running: the next step is to wait.
        expect(sage_card.locator(".health-words")).to_have_text("Syncing")
        expect(sage_card.locator(".next-action")).to_have_text("Wait: syncing…")
        expect(sage_card.locator(".next-action")).to_be_disabled()
        steps.shot("healths")

        # The main button is the next action: a refresh of the failed data type of this connection, at Codat.
        codat.clear_requests()
        codat.configure(sync_seconds=SYNC_SECONDS * 3)
        xero_card.locator(".next-action").click()
        # The spinner says how long a read of Xero's invoices usually takes, and when this one should end.
        expect(xero_card.locator(".syncing-typical")).to_have_text(
            re.compile(r"^usually about 4 min — expected by \d\d:\d\d$")
        )
        expect(page.locator("#messages")).to_contain_text("Refresh requested")
        queued = [r for r in codat.requests() if r["method"] == "POST"]
        assert [r["path"] for r in queued] == [f"/companies/{company['id']}/data/queue/invoices"]
        audit = httpx.get(f"{base}/v1/audit", params={"connection_id": xero}, timeout=10).json()["items"]
        assert [(a["action"], a["data_type"], a["result"]) for a in audit] == [("refresh", "invoices", "accepted")]
        # Until the result comes, the failure stands (a failure outranks a running sync) and is not offered twice.
        expect(xero_card.locator(".next-action")).to_have_text("Refreshing invoices…")
        expect(xero_card.locator(".next-action")).to_be_disabled()
        steps.shot("refreshing")
        expect(xero_card.locator(".health-words")).to_have_text("Working", timeout=int(SYNC_SECONDS * 3000) + 10_000)
        expect(xero_card.locator(".next-action")).to_have_count(0)
        steps.shot("working")

        # Reconnect explains itself before it opens Codat's link page.
        hsbc_card.locator(".next-action").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("HSBC")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        steps.shot("reconnect-offered")


def test_the_detail_shows_the_connections_timeline_twenty_at_a_time(service: str, open_page: Any) -> None:
    from playwright.sync_api import expect

    company, connection = str(uuid.uuid4()), str(uuid.uuid4())
    ids: dict[str, Any] = {"company_id": company, "connection_id": connection}
    post_webhook(service, connection_event(minutes=minutes_ago(60 * 24), platform="Xero", **ids))
    for hours in range(20, 0, -1):  # twenty reads of two data types, the latest invoices failing
        status = "FetchError" if hours == 1 else "Complete"
        results = [("invoices", status), ("bills", "Complete")]
        post_webhook(service, read_completed(results, minutes=minutes_ago(hours * 60), **ids))
    wait_for(lambda: (connection_json(service, connection) or {}).get("health") == "failing", message="folded")

    page, steps = open_page(f"{service}/?company={company}&connection={connection}")
    detail = page.locator("#detail")
    story = detail.locator("ol.timeline > li")
    expect(story).to_have_count(20)
    # Newest first: the health change announced when the failure was folded, then Codat's story.
    expect(story.first).to_contain_text("Health changed from healthy to failing")
    expect(detail.locator('ol.timeline > li[data-kind="sync_failed"]')).to_contain_text("Invoices failed: FetchError")
    steps.shot("timeline")
    detail.get_by_role("button", name="Show older events").click()
    expect(story).to_have_count(40)
    detail.get_by_role("button", name="Show older events").click()  # the link comes after forty syncs
    expect(detail.get_by_role("button", name="Show older events")).to_have_count(0)
    expect(detail.locator('ol.timeline > li[data-kind="linked"]')).to_have_text(re.compile(r"Xero was linked$"))
    steps.shot("older")
