"""The fake Codat behaves like Codat: syncs that progress, signed webhooks, and failures on request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from svix.webhooks import Webhook

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.builders import SECRET
from tests.support.services import wait_for


class Collector:
    """A webhook receiver that verifies each delivery's Svix signature and keeps it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                Webhook(SECRET).verify(body, headers)  # raises on a bad signature: the fake then sees a 500
                collector.received.append({"id": headers["webhook-id"], **json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/codat"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def types(self) -> list[str]:
        return [event["eventType"] for event in self.received]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


@pytest.fixture
def fake(collector: Collector) -> Iterator[FakeCodatServer]:
    with FakeCodatServer(receiver_url=collector.url, secret=SECRET, config=Config(sync_seconds=0.3)) as server:
        yield server


def company(fake: FakeCodatServer, *platforms: str, **kwargs: Any) -> dict[str, Any]:
    created = fake.control.seed(companies=[{"platforms": list(platforms)}], **kwargs)
    return created[0]


def test_a_queued_data_type_goes_queued_fetching_complete_then_a_signed_read_completed_arrives(
    fake: FakeCodatServer, collector: Collector
) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    queued = httpx.post(f"{fake.url}/companies/{seeded['id']}/data/queue/invoices").json()
    assert queued["status"] == "Queued"
    op_url = f"{fake.url}/companies/{seeded['id']}/data/history/{queued['id']}"
    wait_for(lambda: httpx.get(op_url).json()["status"] == "Fetching", timeout=5, interval=0.02)
    done = wait_for(lambda: (op := httpx.get(op_url).json())["status"] == "Complete" and op, timeout=5)
    event = wait_for(lambda: collector.received and collector.received[-1], timeout=5)
    assert event["eventType"] == "read.completed"
    assert event["generatedDate"] == done["completed"]
    assert event["payload"]["dataTypes"] == [
        {
            "connectionId": seeded["connections"][0]["id"],
            "dataType": "invoices",
            "recordsModified": True,
            "status": "Complete",
            "issues": None,
        }
    ]


def test_a_new_company_is_announced_and_read_with_realistic_metadata(
    fake: FakeCodatServer, collector: Collector
) -> None:
    seeded = company(fake, "hsbc")
    connection = seeded["connections"][0]
    assert (connection["platformName"], connection["sourceType"]) == ("HSBC", "Banking")
    assert connection["connectionInfo"]["currency"] == "GBP"
    wait_for(lambda: "read.completed.initial" in collector.types(), timeout=5)
    assert collector.types() == ["connection.created", "connection.connected", "read.completed.initial"]
    data_types = [d["dataType"] for d in collector.received[-1]["payload"]["dataTypes"]]
    assert data_types == ["banking-accounts", "banking-transactions", "banking-accountBalances"]


def test_a_failure_rate_of_one_ends_every_sync_in_the_error_status_with_a_message(
    fake: FakeCodatServer, collector: Collector
) -> None:
    fake.control.configure(failure_rate=1.0, failure_status="FetchError")
    seeded = company(fake, "xero", announce=False, initial_read=False)
    queued = httpx.post(f"{fake.url}/companies/{seeded['id']}/data/queue/bills").json()
    wait_for(lambda: collector.received, timeout=5)
    op = httpx.get(f"{fake.url}/companies/{seeded['id']}/data/history/{queued['id']}").json()
    assert (op["status"], op["isErrored"]) == ("FetchError", True) and op["errorMessage"]
    assert collector.received[-1]["payload"]["dataTypes"][0]["status"] == "FetchError"


def test_a_held_connections_datasets_stay_queued_then_fetching_until_released_then_complete(
    fake: FakeCodatServer, collector: Collector
) -> None:
    seeded = company(fake, "xero", announce=False, hold="Queued")
    base = f"{fake.url}/companies/{seeded['id']}"
    time.sleep(0.6)  # twice the time a sync takes when not held
    statuses = httpx.get(f"{base}/dataStatus").json()
    assert {s["currentStatus"] for s in statuses.values()} == {"Queued"}
    assert collector.received == []

    connection_id = seeded["connections"][0]["id"]
    assert "_hold" not in fake.control.hold(connection_id, "Fetching")
    wait_for(lambda: {s["currentStatus"] for s in httpx.get(f"{base}/dataStatus").json().values()} == {"Fetching"})
    invoices = httpx.get(f"{base}/dataStatus").json()["invoices"]
    assert httpx.get(f"{base}/data/history/{invoices['latestSyncId']}").json()["status"] == "Fetching"
    assert httpx.post(f"{base}/data/queue/invoices").status_code == 409  # still in progress at Codat

    fake.control.hold(connection_id, None)
    event = wait_for(lambda: collector.received and collector.received[-1], timeout=5)
    assert event["eventType"] == "read.completed.initial"
    done = httpx.get(f"{base}/dataStatus").json()["invoices"]
    assert (done["currentStatus"], done["latestSuccessfulSyncId"]) == ("Complete", invoices["latestSyncId"])
    assert done["lastSuccessfulSync"] == event["generatedDate"]


def test_a_connection_is_held_only_at_a_status_codat_reports_while_running(fake: FakeCodatServer) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    response = httpx.post(f"{fake.url}/_control/connections/{seeded['connections'][0]['id']}", json={"hold": "Done"})
    assert response.status_code == 400 and "Queued" in response.json()["error"]


def test_queueing_a_data_type_already_syncing_answers_codats_409(fake: FakeCodatServer) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    url = f"{fake.url}/companies/{seeded['id']}/data/queue/invoices"
    assert httpx.post(url).status_code == 200
    second = httpx.post(url)
    assert second.status_code == 409 and "DatasetAlreadyInProgressException" in second.json()["error"]


def test_unlink_and_delete_send_connection_disconnected_and_connection_deleted(
    fake: FakeCodatServer, collector: Collector
) -> None:
    seeded = company(fake, "xero", "shopify", announce=False, initial_read=False)
    xero, shopify = (c["id"] for c in seeded["connections"])
    base = f"{fake.url}/companies/{seeded['id']}/connections"
    unlinked = httpx.patch(f"{base}/{xero}", json={"status": "Unlinked"})
    assert unlinked.json()["status"] == "Unlinked"
    assert httpx.delete(f"{base}/{shopify}").status_code == 200
    assert httpx.get(f"{base}/{shopify}").status_code == 404
    wait_for(lambda: len(collector.received) == 2, timeout=5)
    assert collector.types() == ["connection.disconnected", "connection.deleted"]
    assert collector.received[1]["payload"]["connection"]["id"] == shopify


def test_dropped_webhooks_are_never_sent_though_codat_completes_the_sync(
    fake: FakeCodatServer, collector: Collector
) -> None:
    fake.control.webhooks(mode="drop")
    seeded = company(fake, "hsbc")
    history = f"{fake.url}/companies/{seeded['id']}/data/history"
    wait_for(lambda: all(op["status"] == "Complete" for op in httpx.get(history).json()["results"]), timeout=5)
    time.sleep(0.2)
    assert collector.received == []
    assert {m["status"] for m in fake.control.messages()} == {"dropped"}


def test_held_webhooks_are_released_in_reverse_order_and_duplicates_keep_their_id(
    fake: FakeCodatServer, collector: Collector
) -> None:
    fake.control.webhooks(mode="hold", duplicates=1)
    company(fake, "xero", initial_read=False)
    assert [m["status"] for m in fake.control.messages()] == ["held", "held"]
    fake.control.webhooks(mode="deliver")
    assert fake.control.release("reverse") == 2
    wait_for(lambda: len(collector.received) == 4, timeout=5)
    assert collector.types() == ["connection.connected"] * 2 + ["connection.created"] * 2
    assert collector.received[0]["id"] == collector.received[1]["id"]
    assert fake.control.redeliver() == 2
    wait_for(lambda: len(collector.received) == 6, timeout=5)


def test_faults_answer_429_with_retry_after_and_500_once_then_normally(fake: FakeCodatServer) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    url = f"{fake.url}/companies/{seeded['id']}/dataStatus"
    fake.control.fault("/dataStatus$", status=429, retry_after=2, times=1)
    fake.control.fault("/dataStatus$", status=500, times=1)
    first, second, third = httpx.get(url), httpx.get(url), httpx.get(url)
    assert (first.status_code, first.headers["retry-after"]) == (429, "2")
    assert (second.status_code, third.status_code) == (500, 200)
    assert [r["status"] for r in fake.control.requests()] == [429, 500, 200]


def test_a_delay_fault_makes_a_client_time_out(fake: FakeCodatServer) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    fake.control.fault("/connections$", delay_seconds=1.0, times=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{fake.url}/companies/{seeded['id']}/connections", timeout=0.2)


def test_history_is_paged_newest_first(fake: FakeCodatServer) -> None:
    seeded = company(fake, "hsbc", announce=False)
    history = f"{fake.url}/companies/{seeded['id']}/data/history"
    page = httpx.get(history, params={"page": 2, "pageSize": 2}).json()
    assert (page["pageNumber"], page["pageSize"], page["totalResults"], len(page["results"])) == (2, 2, 3, 1)


def test_a_configured_api_key_is_required(fake: FakeCodatServer) -> None:
    fake.control.configure(api_key="right")
    assert httpx.get(f"{fake.url}/companies", headers={"Authorization": "Basic wrong"}).status_code == 401
    assert httpx.get(f"{fake.url}/companies", headers={"Authorization": "Basic right"}).status_code == 200


def test_one_time_links_are_fresh_each_time_a_connection_is_shown_and_work_once(
    fake: FakeCodatServer, collector: Collector
) -> None:
    seeded = company(fake, "xero", "hsbc", announce=False, initial_read=False)
    xero, hsbc = (c["id"] for c in seeded["connections"])
    base = f"{fake.url}/companies/{seeded['id']}/connections"
    fixed = httpx.get(f"{base}/{xero}").json()["linkUrl"]
    assert fixed == f"https://link-api.codat.io/companies/{seeded['id']}/connections/{xero}/start"
    assert httpx.get(f"{base}/{xero}").json()["linkUrl"] == fixed

    fake.control.configure(one_time_links=True, link_base_url=fake.url, api_key="key")  # the link page needs none
    codat = {"Authorization": "Basic key"}
    shown = [httpx.get(f"{base}/{xero}", headers=codat).json()["linkUrl"] for _ in range(2)]
    listed = {c["id"]: c["linkUrl"] for c in httpx.get(base, headers=codat).json()["results"]}
    start = f"{fake.url}/companies/{seeded['id']}/connections/{xero}/start?otp="
    assert all(url.startswith(start) for url in [*shown, listed[xero]])
    assert len({*shown, listed[xero]}) == 3
    issued = {link["url"]: link for link in fake.control.links()}
    assert set(shown) <= set(issued) and issued[shown[0]]["used_at"] is None

    fake.control.set_status(xero, "Deauthorized", notify=False)
    first = httpx.get(shown[0])
    assert (first.status_code, first.headers["content-type"].split(";")[0]) == (200, "text/html")
    assert httpx.get(f"{base}/{xero}", headers=codat).json()["status"] == "Linked"
    wait_for(lambda: "connection.reconnected" in collector.types(), timeout=5)
    again = httpx.get(shown[0])
    assert (again.status_code, "already been used" in again.text) == (410, True)
    assert {link["url"]: link for link in fake.control.links()}[shown[0]]["used_at"] is not None
    other = httpx.get(shown[1].replace(f"/connections/{xero}/", f"/connections/{hsbc}/"))
    assert other.status_code == 410, "an otp opens only the connection it was issued for"
    assert httpx.get(start.removesuffix("?otp=")).status_code == 410, "without its otp a link is refused"


def schedules(body: dict[str, Any]) -> dict[str, Any]:
    return {s["dataType"]: s.get("syncSchedule") for s in body["settings"]}


def test_sync_settings_are_served_as_codat_documents_them_and_steered_by_control(fake: FakeCodatServer) -> None:
    seeded = company(fake, "xero", announce=False, initial_read=False)
    client = httpx.get(f"{fake.url}/profile/syncSettings").json()
    assert set(client) == {"clientId", "settings", "overridesDefaults"}
    assert set(client["settings"][0]) >= {"dataType", "fetchOnFirstLink", "syncSchedule", "syncOrder", "isLocked"}
    assert set(schedules(client).values()) == {24}

    fake.control.sync_settings({"*": 168, "bills": 0})
    fake.control.sync_settings({"invoices": 12, "payments": 168}, company_id=seeded["id"])
    client = httpx.get(f"{fake.url}/profile/syncSettings").json()
    own = httpx.get(f"{fake.url}/companies/{seeded['id']}/syncSettings").json()
    assert (client["overridesDefaults"], own["companyId"], set(own)) == (True, seeded["id"], {"companyId", "settings"})
    assert (schedules(client)["invoices"], schedules(client)["bills"]) == (168, 0)
    assert (schedules(own)["invoices"], schedules(own)["payments"], schedules(own)["bills"]) == (12, 168, 0)

    fake.control.sync_settings({"invoices": None}, company_id=seeded["id"])
    assert schedules(httpx.get(f"{fake.url}/companies/{seeded['id']}/syncSettings").json())["invoices"] == 168
    assert httpx.get(f"{fake.url}/companies/nope/syncSettings").status_code == 404
    with pytest.raises(httpx.HTTPStatusError):
        fake.control.sync_settings({"invoices": "weekly"})  # type: ignore[dict-item]
