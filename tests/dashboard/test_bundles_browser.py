"""Bundles on the dashboard, in Debian's Chromium against a real `synctrack dev` calling the fake Codat: each
bundle's "as of" time and its stale members, and "Refresh what's stale" asking Codat for exactly those, the line
moving on when Codat's result arrives; a read-only company token sees the button but cannot use it.

Screenshots of every step go to `test-artifacts/dashboard/<test>/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.test_dashboard_browser import SIGNING_KEY, connection_json, post_webhook, synctrack_dev
from tests.support.auth import company_token
from tests.support.builders import SECRET, iso, read_completed
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.browser

SYNC_SECONDS = 1.0


@contextmanager
def dev_with_fake_codat(folder: Path) -> Iterator[tuple[str, Any]]:
    """`synctrack dev` with the bundle `ar`, calling the fake Codat, which sends its signed webhooks back."""
    from fakecodat.server import FakeCodatServer
    from fakecodat.world import Config

    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/codat"
    with FakeCodatServer(receiver_url=receiver, secret=SECRET, config=Config(sync_seconds=SYNC_SECONDS)) as codat:
        env = {"SYNCTRACK_CODAT_BASE_URL": codat.url, "SYNCTRACK_BUNDLES": "ar=invoices,payments"}
        with synctrack_dev(folder, port, **env) as (base, _):
            yield base, codat.control


def test_a_bundle_shows_its_as_of_time_and_refreshes_what_is_stale(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with dev_with_fake_codat(tmp_path) as (base, codat):
        company = codat.seed(companies=[{"name": "Bramble Books", "platforms": ["xero"]}], initial_read=False)[0]
        xero = company["connections"][0]["id"]
        wait_for(lambda: (connection_json(base, xero) or {}).get("status") == "Linked", message="Xero linked")
        now = datetime.now(UTC).replace(microsecond=0)
        invoices_at, payments_at = now - timedelta(minutes=10), now - timedelta(days=3)
        for data_type, at in (("invoices", invoices_at), ("payments", payments_at)):
            body = read_completed([(data_type, "Complete")], company_id=company["id"], connection_id=xero)
            post_webhook(base, {**body, "generatedDate": iso(at)})
        wait_for(
            lambda: (connection_json(base, xero) or {}).get("last_successful_sync_at") == iso(invoices_at),
            message="the syncs folded",
        )

        page, steps = open_page(f"{base}/?company={company['id']}")
        bundle = page.locator('li.bundle[data-bundle="ar"]')
        expect(bundle).to_contain_text("as of")
        expect(bundle.locator('[data-field="as-of"] time')).to_have_attribute("datetime", iso(payments_at))
        expect(bundle.locator('[data-field="stale"]')).to_have_text("Stale: payments")
        expect(bundle.get_by_role("button", name="Refresh what's stale")).to_be_enabled()
        steps.shot("payments-stale")

        reader = company_token(company["id"], ["read"], key=SIGNING_KEY)
        embedded, _ = open_page(f"{base}/embed/companies/{company['id']}?token={reader}")
        line = embedded.locator('li.bundle[data-bundle="ar"]')
        expect(line.locator('[data-field="stale"]')).to_have_text("Stale: payments")
        expect(line.get_by_role("button", name="Refresh what's stale")).to_be_disabled()  # no `refresh` right

        codat.clear_requests()
        clicked_at = datetime.now(UTC)
        bundle.get_by_role("button", name="Refresh what's stale").click()
        expect(page.locator("#messages")).to_contain_text("Refresh requested")
        expect(bundle.locator('[data-field="stale"]')).to_have_text(
            "Everything up to date", timeout=int(SYNC_SECONDS * 1000) + 15_000
        )
        expect(bundle.locator('[data-field="as-of"] time')).to_have_attribute("datetime", iso(invoices_at))
        expect(bundle.get_by_role("button", name="Refresh what's stale")).to_be_disabled()
        steps.shot("refreshed")
        queued = [r["path"] for r in codat.requests() if r["method"] == "POST"]
        assert queued == [f"/companies/{company['id']}/data/queue/payments"]
        (payments,) = [t for t in (connection_json(base, xero) or {})["data_types"] if t["data_type"] == "payments"]
        assert datetime.fromisoformat(payments["last_successful_sync_at"]) >= clicked_at - timedelta(seconds=1)
