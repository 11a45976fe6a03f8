"""The dashboard in Chromium while Codat holds a read: a real `synctrack dev` (stale limit of two seconds, checked
every second) and the fake Codat holding the connection's datasets `Queued`, then `Fetching`, then completing
them. The spinner must say what Codat is waiting at, live, and go when the read completes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.dashboard.test_dashboard_browser import browser_unavailable, card, synctrack_dev
from tests.support.builders import SECRET
from tests.support.services import free_port

pytestmark = pytest.mark.browser

KEY = "dashboard-test-key"
WAIT_MS = 30_000
"""Long enough for the stale limit, then a check after the longest wait these few checks reach."""


def test_the_spinner_says_what_codat_is_waiting_at_until_the_read_completes(tmp_path: Path, open_page: Any) -> None:
    if browser_unavailable():
        pytest.skip(browser_unavailable() or "")
    from playwright.sync_api import expect

    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/codat"
    with (
        FakeCodatServer(receiver_url=receiver, secret=SECRET, config=Config(sync_seconds=0.4, api_key=KEY)) as fake,
        synctrack_dev(
            tmp_path,
            port,
            SYNCTRACK_CODAT_BASE_URL=fake.url,
            SYNCTRACK_CODAT_API_KEY=KEY,
            SYNCTRACK_RECONCILE_EVERY="0",  # only the stale check asks Codat
            SYNCTRACK_SYNC_STALE_AFTER="2",
            SYNCTRACK_SYNC_STALE_CHECK_SECONDS="1",
        ) as (base, _),
    ):
        company = str(uuid.uuid4())
        spec = {"id": company, "name": "Desktop Books", "platforms": ["xero"], "hold": "Queued"}
        connection = fake.control.seed(companies=[spec])[0]["connections"][0]["id"]
        page, steps = open_page(f"{base}/?company={company}&connection={connection}")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        spinner = card(page, connection).locator(".syncing")
        expect(spinner).to_be_visible()

        expect(spinner).to_have_text("Syncing (waiting at Codat: Queued)", timeout=WAIT_MS)
        expect(page.locator("#detail .detail-status .syncing")).to_have_text("Syncing (waiting at Codat: Queued)")
        expect(page.locator('#detail table.history tr[data-phase="active"]')).to_contain_text(
            "Syncing (waiting at Codat: Queued)"
        )
        steps.shot("waiting-at-codat-queued")

        fake.control.hold(connection, "Fetching")
        expect(spinner).to_have_text("Syncing (waiting at Codat: Fetching)", timeout=WAIT_MS)
        steps.shot("waiting-at-codat-fetching")

        fake.control.hold(connection, None)
        expect(spinner).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator('#detail table.history tr[data-phase="active"]')).to_have_count(0)
        steps.shot("read-completed")
