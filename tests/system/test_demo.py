"""`synctrack demo`: a newcomer sees companies appear and syncs start and finish within a minute, the
companies that existed only in Codat imported at start (onboarding), and a fresh one-time link for the
connection whose access was withdrawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import ServiceProcess, free_port, wait_for, wait_until_healthy

pytestmark = pytest.mark.e2e


def test_the_demo_shows_companies_and_syncs_that_start_and_finish(tmp_path: Path) -> None:
    port, fake_port = free_port(), free_port()
    demo = ServiceProcess(
        [
            "demo",
            *("--port", str(port), "--fake-port", str(fake_port), "--companies", "2", "--existing", "2"),
            *("--sync-seconds", "1", "--traffic-every", "1", "--action-every", "1.5", "--failure-rate", "0"),
            *("--database", str(tmp_path / "demo.db")),
        ],
        {},
        tmp_path,
        "demo",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, demo)
        with httpx.Client(base_url=base, timeout=10) as api:
            listed = wait_for(lambda: len(items := api.get("/v1/companies").json()["items"]) == 4 and items)
            existing = [c for c in listed if (c["name"] or "").endswith("(existing)")]
            companies = [c for c in listed if c not in existing]
            assert len(existing) == 2 and all(c["tags"] == {"onboarding": "import"} for c in existing)

            def imported() -> bool:
                jobs = api.get("/v1/admin/imports").json()["items"]
                return bool(jobs) and jobs[0]["status"] == "completed" and jobs[0]["failed"] == 0

            wait_for(imported, timeout=40, message="the companies only Codat knew were imported")
            for company in existing:
                for conn in api.get(f"/v1/companies/{company['id']}/connections").json()["items"]:
                    syncs = api.get(f"/v1/connections/{conn['id']}/syncs").json()["items"]
                    assert len(syncs) >= 6 and {s["source"] for s in syncs[-6:]} == {"reconcile"}

            def synced_connections() -> list[dict[str, Any]]:
                found = []
                for company in companies:
                    for conn in api.get(f"/v1/companies/{company['id']}/connections").json()["items"]:
                        if conn["last_successful_sync_at"]:
                            found.append(conn)
                return found

            wait_for(lambda: len(synced_connections()) >= 3, timeout=40, message="initial reads finished")

            def confirmed_refresh() -> bool:
                audit = api.get("/v1/audit", params={"action": "refresh"}).json()["items"]
                return any(a["result"] == "accepted" and a["confirmed_by_event_id"] for a in audit)

            wait_for(confirmed_refresh, timeout=40, message="a refresh clicked through the API finished")

            # A connection whose access was withdrawn: each Reconnect answers a new one-time link to the fake
            # Codat's link page, never the link stored from the webhook.
            withdrawn = [c for c in api.get("/v1/connections").json()["items"] if c["status"] == "Deauthorized"]
            assert len(withdrawn) == 1 and f"/v1/connections/{withdrawn[0]['id']}/reconnect" in demo.output()
            links = [api.post(f"/v1/connections/{withdrawn[0]['id']}/reconnect").json()["link_url"] for _ in "ab"]
            assert links[0] != links[1] and withdrawn[0]["link_url"] not in links
            assert all(
                link.startswith(f"http://127.0.0.1:{fake_port}/companies/") and "?otp=" in link for link in links
            )
    finally:
        demo.stop()
    assert "Synctrack demo on" in demo.output()
