"""A connection's first read, why its linking failed and which of its errors are current, as a user meets them:
signed Codat webhooks into a real `synctrack dev`, read back from `GET /v1/connections/{id}`, the live stream
and a signed outbound subscription."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import at, connection_error, connection_event, iso, read_completed, signed_request
from tests.support.services import ServiceProcess, free_port, wait_for, wait_until_healthy
from tests.support.sse_client import SseClient
from tests.support.subscription_support import service_env, subscribe
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

FIRST_READ = "connection.initial_read_completed"


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("history")
    port = free_port()
    process = ServiceProcess(["dev", "--port", str(port)], service_env(tmp), tmp, "dev")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base
    finally:
        process.stop()
    assert "Traceback" not in process.output(), process.output()[-3000:]


@pytest.fixture
def api(dev: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dev, timeout=30, headers=ADMIN_HEADERS) as client:
        yield client


def deliver(api: httpx.Client, body: dict[str, Any], msg_id: str | None = None) -> str:
    """POST a signed webhook as Codat does and wait until it is folded; returns its message id."""
    raw, headers = signed_request(body, msg_id=msg_id or f"msg_{uuid.uuid4().hex}")
    answer = api.post("/webhooks/codat", content=raw, headers=headers)
    assert answer.status_code in (200, 202), answer.text
    message = headers["webhook-id"]
    wait_for(
        lambda: api.get(f"/v1/events/{message}").json().get("outcome") == "processed",
        timeout=20,
        interval=0.1,
        message=f"{message} folded",
    )
    return message


def connection(api: httpx.Client, connection_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/connections/{connection_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_first_read_is_announced_once_per_connection_on_the_stream_and_to_a_subscription(
    dev: str, api: httpx.Client
) -> None:
    company = f"co-{uuid.uuid4().hex[:8]}"
    early_last, early_first = f"conn-{uuid.uuid4().hex[:8]}", f"conn-{uuid.uuid4().hex[:8]}"
    with (
        WebhookReceiver() as receiver,
        SseClient(f"{dev}/v1/stream?company_id={company}", ADMIN_HEADERS) as stream,
    ):
        sub = subscribe(api, receiver.url("/first-read"), event_types=[FIRST_READ], company_ids=[company])
        receiver.expect("/first-read", [sub["secret"]])
        assert stream.next().event == "snapshot"

        def initial(conn: str, minutes: float) -> dict[str, Any]:
            return read_completed(minutes=minutes, connection_id=conn, company_id=company, initial=True)

        deliver(api, connection_event(minutes=0, connection_id=early_last, company_id=company))
        later = initial(early_last, 20)
        later_id = deliver(api, later)
        deliver(api, initial(early_last, 10))  # an earlier first read arriving late
        deliver(api, later, msg_id=later_id)  # Codat's redelivery of the same message
        deliver(api, later)  # the same body again under another message id
        deliver(api, initial(early_first, 10))
        deliver(api, initial(early_first, 20))

        for conn in (early_last, early_first):
            assert connection(api, conn)["initial_read_completed_at"] == iso(at(10))
        events = stream.drain(quiet=1.5)
        announced = [e.json() for e in events if e.event == FIRST_READ]
        assert sorted(a["connection"]["id"] for a in announced) == sorted([early_last, early_first])
        by_connection = {a["connection"]["id"]: a for a in announced}
        assert set(by_connection[early_last]) == {"connection", "event_id"}
        assert by_connection[early_last]["event_id"] == later_id
        assert by_connection[early_last]["connection"]["initial_read_completed_at"] == iso(at(20))
        assert by_connection[early_first]["connection"]["initial_read_completed_at"] == iso(at(10))

        wait_for(lambda: len(receiver.at("/first-read")) >= 2, timeout=20, message="two deliveries")
        wait_for(lambda: all(d["status"] != "pending" for d in deliveries(api, sub["id"])), timeout=20)
        got = receiver.at("/first-read")
    assert len(got) == 2 and len(deliveries(api, sub["id"])) == 2
    assert {r.body["type"] for r in got} == {FIRST_READ}
    assert sorted(r.body["data"]["connection"]["id"] for r in got) == sorted([early_last, early_first])
    assert all(r.verified == {sub["secret"]: True} for r in got)


def deliveries(api: httpx.Client, subscription_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/subscriptions/{subscription_id}/deliveries").json()["items"]
    return items


def test_why_linking_failed_comes_from_the_latest_failure_and_stays_after_a_later_link(api: httpx.Client) -> None:
    conn = f"conn-{uuid.uuid4().hex[:8]}"
    resolved = connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=4)
    cancelled = connection_error("403", "User cancelled linking", status_text="Forbidden")
    deliver(api, connection_event("connection.failed", minutes=5, connection_id=conn, errors=[resolved, cancelled]))
    failed = connection(api, conn)
    assert failed["last_link_failure"] == {
        "at": iso(at(5)),
        "status_code": "403",
        "status_text": "Forbidden",
        "message": "User cancelled linking",
    }
    assert failed["status"] == "PendingAuth"
    assert failed["active_errors"] == [cancelled] and failed["errors"] == [resolved, cancelled]

    deliver(api, connection_event("connection.connected", minutes=10, connection_id=conn))
    deliver(api, connection_event("connection.failed", minutes=2, connection_id=conn))  # an older failure, late
    linked = connection(api, conn)
    assert linked["status"] == "Linked"
    assert linked["last_link_failure"] == failed["last_link_failure"]
    assert linked["errors"] == linked["active_errors"] == []


def test_a_failure_with_only_resolved_errors_or_none_still_says_when_linking_failed(api: httpx.Client) -> None:
    only_resolved, bare, never = (f"conn-{uuid.uuid4().hex[:8]}" for _ in range(3))
    resolved = connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=4, status_text="Error")
    deliver(api, connection_event("connection.failed", minutes=5, connection_id=only_resolved, errors=[resolved]))
    deliver(api, connection_event("connection.failed", minutes=6, connection_id=bare))
    deliver(api, connection_event("connection.connected", minutes=6, connection_id=never))
    assert connection(api, only_resolved)["last_link_failure"] == {
        "at": iso(at(5)),
        "status_code": "500",
        "status_text": "Error",
        "message": "Bank unavailable",
    }
    assert connection(api, only_resolved)["active_errors"] == []
    assert connection(api, bare)["last_link_failure"] == {
        "at": iso(at(6)),
        "status_code": None,
        "status_text": None,
        "message": None,
    }
    assert connection(api, never)["last_link_failure"] is None


def test_active_errors_leave_out_what_codat_resolved(api: httpx.Client) -> None:
    conn = f"conn-{uuid.uuid4().hex[:8]}"
    active = connection_error("401", "Token expired", status="Active")
    resolved = connection_error("500", "Bank unavailable", status="Resolved", resolved_minutes=3)
    unmarked_resolved = connection_error("429", "Too many requests", status=None, resolved_minutes=3)
    unmarked = connection_error("503", "Platform down", status=None)
    deliver(api, connection_event(connection_id=conn, errors=[active, resolved, unmarked_resolved, unmarked]))
    body = connection(api, conn)
    assert body["errors"] == [active, resolved, unmarked_resolved, unmarked]
    assert body["active_errors"] == [active, unmarked]
    listed = api.get("/v1/connections", params={"company_id": body["company_id"]}).json()["items"]
    assert next(c for c in listed if c["id"] == conn)["active_errors"] == [active, unmarked]
