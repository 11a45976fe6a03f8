"""Codat as it really sends: company events and every documented payload, as signed webhooks into a real
`synctrack dev`, read back from the JSON API and the live stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import SECRET, company_event, connection_event, fixture, read_completed, signed_request
from tests.support.services import ServiceProcess, free_port, wait_for, wait_until_healthy
from tests.support.sse_client import SseClient

pytestmark = pytest.mark.e2e

LARKSPUR = "5b1d5f0e-2c4a-4e8b-9a77-3f0c2d6e1a90"
FIXTURES = {
    "company.created": "processed",
    "connection.failed": "processed",
    "read.completed.with-validation-warnings": "processed",
    "read.completed.odd-shapes": "processed",
    "legacy.NewCompanySynchronised": "processed",
    "legacy.NewCompanySynchronized": "processed",
    "legacy.SyncConnectionDeleted": "ignored",
    "legacy.PushOperationStatusChanged": "ignored",
    "legacy.RateLimitReached": "ignored",
    "legacy.RateLimitReset": "ignored",
    "legacy.SyncCompleted": "ignored",
    "legacy.SyncFailed": "ignored",
    "client.rateLimit.reached": "ignored",
    "company.product.enabled": "ignored",
    "invoices.write.successful": "ignored",
}


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {**AUTH_ENV, "SYNCTRACK_WEBHOOK_SECRETS": SECRET, "SYNCTRACK_STREAM_HEARTBEAT_SECONDS": "1"}
    process = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=ADMIN_HEADERS) as api:
            yield api
    finally:
        process.stop()


def post(api: httpx.Client, body: dict[str, Any]) -> str:
    raw, headers = signed_request(body)
    response = api.post("/webhooks/codat", content=raw, headers=headers)
    assert response.status_code == 202, response.text
    return headers["webhook-id"]


def folded(api: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    def all_stored() -> dict[str, dict[str, Any]] | None:
        events = {e["id"]: e for e in api.get("/v1/events", params={"limit": 500}).json()["items"]}
        done = all(i in events and events[i]["outcome"] != "pending" for i in ids)
        return events if done else None

    stored: dict[str, dict[str, Any]] = wait_for(all_stored, message="events folded")
    return stored


def minutes_ago(minutes: float) -> float:
    from tests.support.builders import BASE_TIME

    return (datetime.now(UTC) - timedelta(minutes=minutes) - BASE_TIME).total_seconds() / 60


def company(api: httpx.Client, company_id: str) -> dict[str, Any]:
    items = api.get("/v1/companies").json()["items"]
    found: dict[str, Any] = next(c for c in items if c["id"] == company_id)
    return found


def test_every_documented_payload_is_processed_or_ignored_with_a_reason_never_failed(dev: httpx.Client) -> None:
    ids = {name: post(dev, fixture(name)) for name in FIXTURES}
    stored = folded(dev, list(ids.values()))
    outcomes = {name: stored[i]["outcome"] for name, i in ids.items()}
    assert outcomes == FIXTURES
    for name, message_id in ids.items():
        error = stored[message_id]["error"]
        assert (error is not None and len(error) > 10) if FIXTURES[name] == "ignored" else error is None, name
    connection = dev.get("/v1/connections/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d").json()
    assert [(e["statusCode"], e["status"]) for e in connection["errors"]] == [("403", "Active"), ("500", "Resolved")]
    syncs = {s["data_type"]: s for s in dev.get(f"/v1/connections/{connection['id']}/syncs").json()["items"]}
    assert syncs["bills"]["issues"][0] == {"message": "The platform timed out"}  # a string issue, as an object
    assert syncs["payments"]["issues"] == [{"message": "one stray sentence"}]
    assert syncs["invoices"]["issues"][0]["type"] == "warning.validation"
    larkspur = company(dev, LARKSPUR)
    assert larkspur["name"] == "Larkspur Joinery" and larkspur["deleted_at"] is None
    assert dev.get("/v1/admin/dead-letters").json()["total"] == 0


def test_company_deleted_deletes_its_connections_in_the_api_the_stream_and_for_actions(dev: httpx.Client) -> None:
    company_id, a, b = "co-deleted", "conn-a", "conn-b"
    created = company_event(minutes=minutes_ago(30), company_id=company_id, name="Marlow Print Works")
    created["payload"]["tags"] = {"region": "uk", "tier": "gold"}
    setup = [
        post(dev, created),
        post(dev, connection_event(minutes=minutes_ago(50), company_id=company_id, connection_id=a)),
        post(dev, connection_event(minutes=minutes_ago(50), company_id=company_id, connection_id=b)),
        post(dev, read_completed(minutes=minutes_ago(40), company_id=company_id, connection_id=a)),
    ]
    folded(dev, setup)
    listed = company(dev, company_id)
    assert (listed["name"], listed["description"], listed["tags"]) == (
        "Marlow Print Works",
        "Asked for an overdraft.",
        {"region": "uk", "tier": "gold"},
    )
    assert listed["connection_count"] == 2
    stream_url = f"{dev.base_url}/v1/stream?company_id={company_id}"
    with SseClient(stream_url, headers=ADMIN_HEADERS) as stream:
        snapshot = stream.next()
        assert snapshot.event == "snapshot"
        assert [(c["id"], c["deleted_at"]) for c in snapshot.json()["companies"]] == [(company_id, None)]
        deleted_at = minutes_ago(10)
        folded(dev, [post(dev, company_event("company.deleted", minutes=deleted_at, company_id=company_id))])
        updates = [e.json() for e in stream.take(2) if e.event == "connection.updated"]
    assert {u["id"] for u in updates} == {a, b}
    assert all(u["deleted_at"] is not None for u in updates)

    # Generated before the deletion but folded after it: the connection stays deleted. A connection first
    # heard of now, generated before the deletion, is deleted on arrival.
    late = [
        post(
            dev,
            connection_event("connection.reconnected", minutes=minutes_ago(20), company_id=company_id, connection_id=a),
        ),
        post(dev, connection_event(minutes=minutes_ago(25), company_id=company_id, connection_id="conn-late")),
    ]
    folded(dev, late)
    connections = dev.get(f"/v1/companies/{company_id}/connections").json()["items"]
    assert {c["id"]: c["deleted_at"] is not None for c in connections} == {a: True, b: True, "conn-late": True}
    assert dev.get(f"/v1/connections/{a}/syncs").json()["items"] == []  # history goes, as for connection.deleted
    listed = company(dev, company_id)
    assert listed["deleted_at"] is not None and listed["connection_count"] == 0  # still listed: audit material
    with SseClient(stream_url, headers=ADMIN_HEADERS) as again:
        (shown,) = again.next().json()["companies"]
    assert (shown["id"], shown["deleted_at"]) == (company_id, listed["deleted_at"])
    for response in (
        dev.post(f"/v1/connections/{a}/unlink"),
        dev.delete(f"/v1/connections/{b}"),
        dev.post(f"/v1/companies/{company_id}/refresh"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"
    body = json.dumps(dev.get(f"/v1/events/{setup[1]}").json()["body"])
    assert a in body  # like connection.deleted, the stored webhooks stay (erasing is what DELETE does)
