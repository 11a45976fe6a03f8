"""One valid builder per input kind: Codat webhook bodies (both generations) and signed requests.

Each test changes one thing from these defaults.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from svix.webhooks import Webhook

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
COMPANY = "8a210b68-6988-11ed-a1eb-0242ac120002"
CONNECTION = "ee2eb431-c0fa-4dc9-93fa-d29781c12bcd"
BASE_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def at(minutes: float) -> datetime:
    return BASE_TIME + timedelta(minutes=minutes)


def company_ref(company_id: str = COMPANY, name: str = "Toft Stores") -> dict[str, Any]:
    return {"id": company_id, "name": name, "description": None, "links": {}, "tags": {}}


def connection_event(
    event_type: str = "connection.connected",
    *,
    minutes: float = 0,
    connection_id: str = CONNECTION,
    company_id: str = COMPANY,
    status: str | None = None,
    platform: str = "Lloyds Bank",
    info: dict[str, Any] | None = None,
    event_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A `connection.*` event; `errors` is the connection's `dataConnectionErrors` (none by default)."""
    default_status = {
        "connection.created": "PendingAuth",
        "connection.connected": "Linked",
        "connection.reconnected": "Linked",
        "connection.disconnected": "Unlinked",
        "connection.deleted": "Unlinked",
        "connection.failed": "PendingAuth",
    }.get(event_type, "Linked")
    return {
        "id": event_id or str(uuid.uuid4()),
        "eventType": event_type,
        "generatedDate": iso(at(minutes)),
        "payload": {
            "referenceCompany": company_ref(company_id),
            "connection": {
                "id": connection_id,
                "integrationId": "bf083d72-62c7-493e-aec9-81b4dbba7e2c",
                "integrationKey": "dfxm",
                "sourceId": "bdd831ce-eebd-4896-89a7-20e5ee8989ee",
                "sourceType": "Banking",
                "platformName": platform,
                "linkUrl": f"https://link.example/{connection_id}",
                "status": status or default_status,
                "lastSync": None,
                "created": iso(BASE_TIME),
                "dataConnectionErrors": errors or [],
                "connectionInfo": info if info is not None else {"currency": "GBP"},
            },
        },
    }


def connection_error(
    status_code: str = "403",
    message: str = "User cancelled linking",
    *,
    status: str | None = "Active",
    resolved_minutes: float | None = None,
    status_text: str = "Forbidden",
) -> dict[str, Any]:
    """One `dataConnectionErrors[]` entry as Codat documents it; `resolved_minutes` sets `resolvedOnUtc`."""
    entry: dict[str, Any] = {
        "statusCode": status_code,
        "statusText": status_text,
        "errorMessage": message,
        "erroredOnUtc": iso(BASE_TIME),
        "status": status,
    }
    if resolved_minutes is not None:
        entry["resolvedOnUtc"] = iso(at(resolved_minutes))
    return entry


def read_completed(
    results: list[tuple[str, str]] | None = None,
    *,
    minutes: float = 10,
    connection_id: str = CONNECTION,
    company_id: str = COMPANY,
    initial: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    """`results` is a list of (data type, dataset status)."""
    results = results or [("banking-accounts", "Complete"), ("banking-transactions", "Complete")]
    return {
        "id": event_id or str(uuid.uuid4()),
        "eventType": "read.completed.initial" if initial else "read.completed",
        "generatedDate": iso(at(minutes)),
        "payload": {
            "referenceCompany": company_ref(company_id),
            "modifiedFromDate": None,
            "dataTypes": [
                {
                    "connectionId": connection_id,
                    "dataType": data_type,
                    "recordsModified": status == "Complete",
                    "status": status,
                    "issues": None if status == "Complete" else [{"type": status, "message": "failed"}],
                }
                for data_type, status in results
            ],
        },
    }


def legacy_alert(
    rule: str,
    data: dict[str, Any],
    *,
    connection_id: str = CONNECTION,
    company_id: str = COMPANY,
    alert_id: str | None = None,
) -> dict[str, Any]:
    return {
        "ClientId": "bae71d36-ff47-420a-b4a6-f8c9ddf41140",
        "ClientName": "Example Lender",
        "CompanyId": company_id,
        "DataConnectionId": connection_id,
        "RuleId": "70af3071-65d9-4ec3-b3cb-5283e8d55dac",
        "RuleType": rule,
        "AlertId": alert_id or str(uuid.uuid4()),
        "Message": rule,
        "Data": data,
    }


def signed_headers(
    body: bytes | str,
    *,
    msg_id: str | None = None,
    secret: str = SECRET,
    timestamp: float | None = None,
    family: str = "webhook",
) -> dict[str, str]:
    """Headers Svix would send for `body` (`family` is "webhook" or "svix")."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(timestamp if timestamp is not None else time.time())
    text = body.decode() if isinstance(body, bytes) else body
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    return {
        f"{family}-id": msg_id,
        f"{family}-timestamp": str(ts),
        f"{family}-signature": signature,
        "content-type": "application/json",
    }


def signed_request(body: dict[str, Any], **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, signed_headers(raw, **kwargs)


def company_event(
    event_type: str = "company.created",
    *,
    minutes: float = 0,
    company_id: str = COMPANY,
    name: str = "Toft Stores",
    description: str | None = "Asked for an overdraft.",
    tags: dict[str, str] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """`company.created` / `company.deleted`: the payload is the company itself."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "eventType": event_type,
        "generatedDate": iso(at(minutes)),
        "payload": {
            "id": company_id,
            "name": name,
            "description": description,
            "redirect": f"https://link.example/company/{company_id}",
            "lastSync": None,
            "created": iso(BASE_TIME),
            "tags": tags if tags is not None else {"region": "uk"},
        },
    }
