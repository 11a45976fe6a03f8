"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against real `synctrack dev`
processes fed by signed webhooks (and by the fake Codat for the actions).

Every step leaves a screenshot in `test-artifacts/dashboard/<test>/`; each test prints its folder.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.builders import SECRET, connection_event, iso, read_completed, signed_request
from tests.support.services import ROOT, ServiceProcess, free_port, wait_for, wait_until_healthy

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SYNCTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
UI_TIMEOUT_MS = 10_000
SIGNING_KEY = "dashboard-test-signing-key-0123456789abcdef"


def browser_unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = browser_unavailable()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Steps:
    """Numbered screenshots of one test, in its own folder."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def shot(self, label: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{label}.png"), full_page=True)


@pytest.fixture
def open_page(
    browser: Any, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[Any, Steps]]]:
    """open_page(url, width=1280) -> (page, steps). Fails the test on any uncaught error in the page."""
    contexts: list[Any] = []
    errors: list[str] = []
    steps: list[Steps] = []

    def open_(url: str, width: int = 1280, height: int = 900) -> tuple[Any, Steps]:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB", timezone_id="UTC")
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        step = Steps(page, request.node.name)
        steps.append(step)
        return page, step

    yield open_
    for context in contexts:
        context.close()
    with capsys.disabled():
        for step in steps:
            print(f"\n  screenshots: {step.folder.relative_to(ROOT)}/ ({step.count} steps)")
    assert not errors, f"uncaught errors in the page: {errors}"


@contextmanager
def synctrack_dev(folder: Path, port: int | None = None, **env: str) -> Iterator[tuple[str, ServiceProcess]]:
    """A real `synctrack dev` (web + in-process worker + SQLite in `folder`)."""
    port = port or free_port()
    settings = {
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{folder / 'ledger.db'}",
        "SYNCTRACK_STREAM_HEARTBEAT_SECONDS": "2",
        "SYNCTRACK_CODAT_API_KEY": "dashboard-test-key",
        "SYNCTRACK_CODAT_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: Codat is unreachable
        "SYNCTRACK_CODAT_MAX_RETRIES": "0",
        "SYNCTRACK_TOKEN_SIGNING_KEY": SIGNING_KEY,
        "SYNCTRACK_STREAM_TOKEN_IN_QUERY": "true",
        **env,
    }
    process = ServiceProcess(["dev", "--port", str(port)], settings, folder, f"dev-{port}-{uuid.uuid4().hex[:4]}")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base, process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if browser_unavailable():
        pytest.skip(browser_unavailable() or "")
    with synctrack_dev(tmp_path_factory.mktemp("dashboard")) as (base, _):
        yield base


# --- seeding through the real receiver -------------------------------------------------------------


def post_webhook(base: str, body: dict[str, Any]) -> None:
    raw, headers = signed_request(body)
    response = httpx.post(f"{base}/webhooks/codat", content=raw, headers=headers, timeout=10)
    assert response.is_success, response.text


def named(event: dict[str, Any], company: str, *, at: datetime | None = None, **connection: Any) -> dict[str, Any]:
    """`event` for company name `company`, optionally stamped `at`, with connection fields replaced."""
    event["payload"]["referenceCompany"]["name"] = company
    if at is not None:
        event["generatedDate"] = iso(at)
    if connection:
        event["payload"]["connection"].update(connection)
    return event


def connection_json(base: str, connection_id: str) -> dict[str, Any] | None:
    response = httpx.get(f"{base}/v1/connections/{connection_id}", timeout=10)
    return response.json() if response.status_code == 200 else None


class Seeded:
    """A company with a bank (one failed data type), Xero (needs re-linking) and QuickBooks (pending)."""

    def __init__(self, base: str, name: str = "Toft Stores") -> None:
        self.company = str(uuid.uuid4())
        self.name = name
        self.bank, self.xero, self.quickbooks = (str(uuid.uuid4()) for _ in range(3))
        company = self.company

        def send(event: dict[str, Any], **connection: Any) -> None:
            post_webhook(base, named(event, name, **connection))

        send(connection_event(connection_id=self.bank, company_id=company, info={"currency": "GBP"}))
        send(read_completed(connection_id=self.bank, company_id=company, initial=True))
        send(
            read_completed(
                [("banking-transactions", "FetchError")], minutes=70, connection_id=self.bank, company_id=company
            )
        )
        xero = connection_event(minutes=1, connection_id=self.xero, company_id=company, platform="Xero")
        send(xero, sourceType="Accounting", integrationKey="gbol")
        both = [("invoices", "Complete"), ("bills", "Complete")]
        send(read_completed(both, minutes=15, connection_id=self.xero, company_id=company, initial=True))
        send(read_completed([("bills", "AuthError")], minutes=80, connection_id=self.xero, company_id=company))
        pending = connection_event(
            "connection.created",
            minutes=2,
            connection_id=self.quickbooks,
            company_id=company,
            platform="QuickBooks Online",
        )
        send(pending, sourceType="Accounting", integrationKey="qhyg")
        wait_for(lambda: self.settled(base), timeout=20, message="seeded webhooks folded")

    def settled(self, base: str) -> bool:
        bank, xero = connection_json(base, self.bank), connection_json(base, self.xero)
        return bool(
            bank
            and xero
            and connection_json(base, self.quickbooks)
            and bank["last_sync_status"] == "FetchError"
            and xero["last_sync_status"] == "AuthError"
            and not bank["sync_active"]
            and not xero["sync_active"]
        )


def card(page: Any, connection_id: str) -> Any:
    return page.locator(f'li.connection[data-connection-id="{connection_id}"]')


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- the tests -----------------------------------------------------------------------------------


def test_the_admin_page_lists_a_companys_connections_and_shows_one_in_detail(service: str, open_page: Any) -> None:
    from playwright.sync_api import expect

    seeded = Seeded(service)
    page, steps = open_page(f"{service}/?company={seeded.company}")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.get_by_label("Company")).to_have_value(seeded.company)
    expect(page.locator("li.connection")).to_have_count(3)
    bank = card(page, seeded.bank)
    expect(bank.get_by_role("link")).to_have_text("Lloyds Bank")
    expect(bank.locator(".badge[data-status]")).to_have_text("Linked")
    expect(card(page, seeded.quickbooks).locator(".badge[data-status]")).to_have_text("PendingAuth")
    last_sync = bank.locator('[data-field="last-sync"] time')
    expect(last_sync).to_have_attribute("datetime", "2026-11-20T10:10:00Z")
    expect(last_sync).to_have_attribute("title", re.compile(r"20 Nov 2026.*10:10:00"))
    expect(last_sync).to_have_text(re.compile(r"ago$"))
    expect(bank.locator('[data-field="last-sync"]')).to_contain_text("FetchError")
    # A screen reader hears the health, status and times with the name, not the name alone.
    expect(bank.get_by_role("link")).to_have_accessible_description(
        re.compile(r"^Sync failing Linked First sync .* FetchError .+$")
    )
    steps.shot("list")

    bank.get_by_role("link").click()
    detail = page.locator("#detail")
    expect(page.locator("#detail-heading")).to_be_focused()
    expect(page).to_have_url(re.compile(f"connection={seeded.bank}"))
    expect(detail.locator('tr[data-data-type="banking-transactions"]')).to_contain_text("Failed: FetchError")
    expect(detail.locator('tr[data-data-type="banking-accounts"]')).to_contain_text("Succeeded")
    failed = detail.locator("table.history tr.failed")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("FetchError: failed")
    expect(detail.locator("table.history tbody tr")).to_have_count(3)
    expect(detail.locator("dl")).to_contain_text("CurrencyGBP")
    steps.shot("detail-with-a-failed-sync")

    card(page, seeded.xero).get_by_role("link").click()
    # Re-linking asks Codat for a fresh link at the click (tests/dashboard/test_reconnect_browser.py).
    expect(detail.get_by_role("button", name="Re-link Xero")).to_be_visible()
    expect(detail.locator(f'a[href="https://link.example/{seeded.xero}"]')).to_have_count(0)
    expect(detail).to_contain_text("must sign in to Xero again")
    steps.shot("detail-needing-a-re-link")

    page.go_back()
    expect(page.locator("#detail-heading")).to_contain_text("Lloyds Bank")


def test_spinners_times_and_history_follow_webhooks_without_a_reload(service: str, open_page: Any) -> None:
    from playwright.sync_api import expect

    seeded = Seeded(service)
    page, steps = open_page(f"{service}/?company={seeded.company}&connection={seeded.quickbooks}")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    page.evaluate("window.sameDocument = true")
    quickbooks = card(page, seeded.quickbooks)
    expect(quickbooks.locator('[data-field="last-sync"]')).to_have_text("never")
    expect(quickbooks.locator(".syncing")).to_have_count(0)

    linked_at = now_utc()
    connected = connection_event(
        connection_id=seeded.quickbooks, company_id=seeded.company, platform="QuickBooks Online"
    )
    post_webhook(service, named(connected, seeded.name, at=linked_at, sourceType="Accounting"))
    expect(quickbooks.locator(".badge[data-status]")).to_have_text("Linked")
    expect(quickbooks.locator(".syncing")).to_be_visible()
    expect(page.locator("#detail .detail-status .syncing")).to_be_visible()
    expect(page.locator('#detail table.history tr[data-phase="active"]')).to_contain_text("All data")
    steps.shot("initial-sync-running")

    finished_at = linked_at + timedelta(seconds=2)
    result = read_completed(
        [("invoices", "Complete"), ("customers", "RateLimitError")],
        connection_id=seeded.quickbooks,
        company_id=seeded.company,
        initial=True,
    )
    post_webhook(service, named(result, seeded.name, at=finished_at))
    expect(quickbooks.locator(".syncing")).to_have_count(0)
    last_sync = quickbooks.locator('[data-field="last-sync"] time')
    expect(last_sync).to_have_attribute("datetime", iso(finished_at))
    expect(last_sync).to_have_text("just now")
    history = page.locator("#detail table.history tbody tr")
    expect(history).to_have_count(2)
    expect(page.locator("#detail table.history tr.failed")).to_contain_text("RateLimitError")
    expect(page.locator('#detail tr[data-data-type="invoices"]')).to_contain_text("Succeeded")
    assert page.evaluate("window.sameDocument") is True, "the page reloaded"
    steps.shot("initial-sync-finished")


def test_the_embedded_page_on_a_phone_works_by_keyboard_and_explains_a_failed_action(
    service: str, open_page: Any
) -> None:
    from playwright.sync_api import expect

    seeded = Seeded(service)
    page, steps = open_page(f"{service}/embed/companies/{seeded.company}", width=390, height=844)
    expect(page.locator("li.connection")).to_have_count(3)
    expect(page.locator("#company-picker")).to_be_hidden()
    expect(page.locator("#company-name")).to_have_text(seeded.name)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    steps.shot("phone-list")

    card(page, seeded.bank).get_by_role("link").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail-heading")).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the detail scrolls sideways"
    steps.shot("phone-detail")

    detail = page.locator("#detail")
    dialog = page.get_by_role("dialog")
    detail.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("removed completely")
    expect(dialog).to_contain_text("cannot be undone")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    steps.shot("delete-explained")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(detail.get_by_role("button", name="Delete")).to_be_focused()

    detail.get_by_role("button", name="Disconnect").click()
    expect(dialog).to_contain_text("data already synced is kept")
    dialog.get_by_role("button", name="Disconnect").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Codat could not be reached, so nothing was changed")
    steps.shot("codat-unreachable")
    expect(card(page, seeded.bank).locator(".badge[data-status]")).to_have_text("Linked")
    assert (connection_json(service, seeded.bank) or {})["status"] == "Linked"


def test_after_a_restart_the_page_reconnects_re_reads_the_state_and_goes_on_live(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    with synctrack_dev(tmp_path, port) as (base, _):
        seeded = Seeded(base)
        page, steps = open_page(f"{base}/?company={seeded.company}")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    # The in-process Redis went with the process: the id the browser resumes from is unknown now.
    expect(page.locator("#live-state")).not_to_have_attribute("data-state", "live")
    steps.shot("service-stopped")

    with synctrack_dev(tmp_path, port) as (base, restarted):
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live", timeout=30_000)
        synced_at = now_utc()
        result = read_completed(
            [("banking-accounts", "Complete")], connection_id=seeded.bank, company_id=seeded.company
        )
        post_webhook(base, named(result, seeded.name, at=synced_at))
        expect(card(page, seeded.bank).locator('[data-field="last-sync"] time')).to_have_attribute(
            "datetime", iso(synced_at)
        )
        steps.shot("live-again")
        log = restarted.output()
    assert "opening=last_event_id_not_found" in log, "the browser did not resume with its Last-Event-ID"
    assert log.index("opening=last_event_id_not_found") < log.rindex("opening=snapshot"), "no fresh start after reset"


SYNC_SECONDS = 2.0
"""How long the fake Codat takes for a read: long enough to see a spinner, short enough for CI."""


@contextmanager
def synctrack_with_fake_codat(folder: Path) -> Iterator[tuple[str, Any]]:
    """`synctrack dev` calling the fake Codat, which sends its signed webhooks back to it."""
    from fakecodat.server import FakeCodatServer
    from fakecodat.world import Config

    port = free_port()
    receiver = f"http://127.0.0.1:{port}/webhooks/codat"
    with FakeCodatServer(receiver_url=receiver, secret=SECRET, config=Config(sync_seconds=SYNC_SECONDS)) as codat:
        with synctrack_dev(folder, port, SYNCTRACK_CODAT_BASE_URL=codat.url, SYNCTRACK_CODAT_MAX_RETRIES="2") as (
            base,
            _,
        ):
            yield base, codat.control


def test_refresh_disconnect_and_delete_go_through_codat_and_show_live(
    browser: Any, open_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with synctrack_with_fake_codat(tmp_path) as (base, codat):
        company = codat.seed(companies=[{"name": "Larkspur Joinery", "platforms": ["xero", "hsbc"]}])[0]
        ids = {c["platformName"]: c["id"] for c in company["connections"]}
        xero, hsbc = ids["Xero"], ids["HSBC"]

        def first_reads_done() -> bool:
            rows = [connection_json(base, xero), connection_json(base, hsbc)]
            return all(row and row["last_sync_at"] and not row["sync_active"] for row in rows)

        wait_for(first_reads_done, timeout=30, message="the fake Codat's first reads folded")
        page, steps = open_page(f"{base}/?company={company['id']}")
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        xero_last_sync = card(page, xero).locator('[data-field="last-sync"] time')
        first_read_at = xero_last_sync.get_attribute("datetime")
        assert first_read_at
        steps.shot("seeded")

        # Refresh all data: spinners at the click, gone when the fake Codat's read.completed arrives.
        page.get_by_role("button", name="Refresh all data").click()
        expect(card(page, xero).locator(".syncing")).to_be_visible()
        expect(card(page, hsbc).locator(".syncing")).to_be_visible()
        expect(page.locator("#messages")).to_contain_text("Refresh requested")
        steps.shot("refreshing-everything")
        expect(card(page, xero).locator(".syncing")).to_have_count(0, timeout=int(SYNC_SECONDS * 1000) + 10_000)
        expect(card(page, hsbc).locator(".syncing")).to_have_count(0)
        expect(xero_last_sync).not_to_have_attribute("datetime", first_read_at)
        expect(xero_last_sync).to_have_text("just now")
        steps.shot("refreshed-everything")

        # Refresh one data type from the detail.
        card(page, xero).get_by_role("link").click()
        detail = page.locator("#detail")
        invoices = detail.locator('tr[data-data-type="invoices"]')
        invoices.get_by_role("button", name="Refresh invoices").click()
        expect(invoices.locator(".syncing")).to_be_visible()
        expect(invoices.get_by_role("button", name="Refresh invoices")).to_be_disabled()
        steps.shot("refreshing-invoices")
        expect(invoices.locator(".syncing")).to_have_count(0, timeout=int(SYNC_SECONDS * 1000) + 10_000)
        expect(invoices).to_contain_text("Succeeded")
        expect(invoices.get_by_role("button", name="Refresh invoices")).to_be_enabled()

        # Disconnect (keeps the data) behind a confirmation.
        dialog = page.get_by_role("dialog")
        card(page, hsbc).get_by_role("link").click()
        expect(page.locator("#detail-heading")).to_contain_text("HSBC")
        detail.get_by_role("button", name="Disconnect").click()
        expect(dialog).to_contain_text("data already synced is kept")
        steps.shot("disconnect-explained")
        dialog.get_by_role("button", name="Disconnect").click()
        expect(card(page, hsbc).locator(".badge[data-status]")).to_have_text("Unlinked")
        expect(detail).to_contain_text("This connection is disconnected")
        expect(detail.get_by_role("button", name="Disconnect")).to_be_disabled()
        expect(detail.locator("table.history tbody tr").first).to_be_visible()
        steps.shot("disconnected")

        # Delete (removes everything) behind a confirmation: the connection leaves the list.
        card(page, xero).get_by_role("link").click()
        expect(page.locator("#detail-heading")).to_contain_text("Xero")
        detail.get_by_role("button", name="Delete").click()
        expect(dialog).to_contain_text("cannot be undone")
        dialog.get_by_role("button", name="Delete connection").click()
        expect(card(page, xero)).to_have_count(0)
        expect(detail).to_be_hidden()
        expect(page.locator("li.connection")).to_have_count(1)
        steps.shot("deleted")
        page.get_by_label("Show deleted", exact=True).check()
        expect(card(page, xero).locator(".badge[data-status]")).to_have_text("deleted")
        steps.shot("deleted-shown-on-request")

        calls = {(r.get("method"), r.get("path")) for r in codat.requests()}
        company_path = f"/companies/{company['id']}"
        assert ("PATCH", f"{company_path}/connections/{hsbc}") in calls
        assert ("DELETE", f"{company_path}/connections/{xero}") in calls


def test_a_company_token_goes_with_every_request_leaves_the_address_bar_and_bounds_what_the_page_can_do(
    service: str, open_page: Any
) -> None:
    import time

    from playwright.sync_api import expect

    from service.security.tokens import TokenSigner

    seeded, other = Seeded(service), Seeded(service, name="Harbour Cafe")
    token, _ = TokenSigner(SIGNING_KEY).mint(seeded.company, ["read"], 600, time.time())

    # A token the API refuses: the page says so and asks for another.
    page, steps = open_page(f"{service}/embed/companies/{seeded.company}?token=st1.not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("Synctrack needs a valid access token")
    assert "token" not in page.url
    steps.shot("refused-token")
    requests: list[Any] = []
    page.on("request", lambda request: requests.append(request) if "/v1/" in request.url else None)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Use this token").click()

    expect(page.locator("li.connection")).to_have_count(3)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    assert "token" not in page.url
    api_calls = [r for r in requests if "/v1/stream" not in r.url]
    streams = [r for r in requests if "/v1/stream" in r.url]
    assert api_calls and streams
    assert all(r.headers.get("authorization") == f"Bearer {token}" for r in api_calls)
    assert all(f"access_token={token}" in r.url for r in streams)
    steps.shot("embedded-with-a-read-only-token")

    # A right the token lacks is refused, and said so in words.
    card(page, seeded.bank).get_by_role("link").click()
    page.locator("#detail").get_by_role("button", name="Disconnect").click()
    page.get_by_role("dialog").get_by_role("button", name="Disconnect").click()
    expect(page.get_by_role("alert")).to_contain_text("You are not allowed to do this")
    steps.shot("disconnect-refused")
    assert (connection_json(service, seeded.bank) or {})["status"] == "Linked"

    # Another company is out of reach, exactly as if it did not exist; the token survives the reload.
    page.goto(f"{service}/embed/companies/{other.company}")
    expect(page.get_by_role("alert")).to_contain_text("Synctrack does not know this item")
    expect(page.locator("li.connection")).to_have_count(0)
    expect(page.locator("#refresh-all")).to_be_hidden()
    expect(page.locator("#connections-empty")).to_have_text("The connections of this company could not be loaded.")
    steps.shot("other-company-refused")


def test_an_odd_platform_name_or_time_never_blanks_the_list_or_hides_the_other_connections(
    service: str, open_page: Any
) -> None:
    from playwright.sync_api import expect

    company = str(uuid.uuid4())
    spaces, blank, xero = (str(uuid.uuid4()) for _ in range(3))
    post_webhook(service, named(connection_event(connection_id=spaces, company_id=company, platform="   "), "Odd Co"))
    post_webhook(service, named(connection_event(connection_id=blank, company_id=company, platform=""), "Odd Co"))
    post_webhook(service, named(connection_event(connection_id=xero, company_id=company, platform="Xero"), "Odd Co"))
    wait_for(lambda: all(connection_json(service, c) for c in (spaces, blank, xero)), timeout=20, message="folded")

    page, steps = open_page(f"{service}/?company={company}")
    expect(page.locator("li.connection")).to_have_count(3)
    expect(card(page, xero).get_by_role("link")).to_have_text("Xero")
    expect(card(page, spaces).locator(".logo")).to_have_text("D")  # the platform key, as the name is blank
    expect(card(page, spaces).get_by_role("link")).to_have_text("dfxm")
    expect(card(page, blank).get_by_role("link")).to_have_text("dfxm")
    steps.shot("odd-platform-names")

    card(page, spaces).get_by_role("link").click()
    expect(page.locator("#detail-heading")).to_contain_text("dfxm")
    steps.shot("odd-platform-name-in-detail")
