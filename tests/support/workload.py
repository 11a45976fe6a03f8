"""A realistic webhook mix for load and fault runs: both envelope generations, many companies, a few
"hot" companies with thousands of events each (a portal "recover"), shuffled, with re-deliveries.

Deterministic for a seed, so a failing run can be reproduced.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass

from tests.support.builders import (
    SECRET,
    connection_error,
    connection_event,
    legacy_alert,
    read_completed,
    signed_headers,
)

CONNECTION_EVENTS = (
    "connection.created",
    "connection.connected",
    "connection.disconnected",
    "connection.reconnected",
    "connection.failed",
)
DATA_TYPES = ("invoices", "bills", "bankAccounts", "banking-transactions", "commerce-orders", "payments")
RESULT_STATUSES = ("Complete", "Complete", "Complete", "FetchError", "AuthError")
LEGACY_RULES = ("DataConnectionStatusChanged", "Data sync completed", "Data Sync Status Changed To Error")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST Codat would make: the Svix message id and the raw JSON body."""

    message_id: str
    body: str


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _event(rng: random.Random, company: str, connection: str) -> dict[str, object]:
    minutes = rng.uniform(0, 60 * 24 * 7)
    roll = rng.random()
    if roll < 0.25:
        event_type = rng.choice(CONNECTION_EVENTS)
        return connection_event(
            event_type,
            minutes=minutes,
            connection_id=connection,
            company_id=company,
            event_id=_uuid(rng),
            errors=[connection_error()] if event_type == "connection.failed" else None,
        )
    if roll < 0.7:
        results = [(dt, rng.choice(RESULT_STATUSES)) for dt in rng.sample(DATA_TYPES, rng.randint(1, 3))]
        return read_completed(
            results,
            minutes=minutes,
            connection_id=connection,
            company_id=company,
            initial=rng.random() < 0.1,
            event_id=_uuid(rng),
        )
    rule = rng.choice(LEGACY_RULES)
    if rule == "DataConnectionStatusChanged":
        new, old = rng.choice([("Linked", "PendingAuth"), ("Unlinked", "Linked"), ("Linked", "Unlinked")])
        data: dict[str, object] = {
            "dataConnectionId": connection,
            "newStatus": new,
            "oldStatus": old,
            "platformKey": "gbol",
        }
    elif rule == "Data sync completed":
        data = {"dataType": rng.choice(DATA_TYPES), "datasetId": _uuid(rng)}
    else:
        data = {"dataType": rng.choice(DATA_TYPES), "datasetStatus": "FetchError", "datasetId": _uuid(rng)}
    return legacy_alert(rule, data, connection_id=connection, company_id=company, alert_id=_uuid(rng))


def webhook_mix(
    unique: int,
    *,
    duplicate_share: float = 0.0,
    companies: int = 50,
    hot_companies: int = 3,
    hot_share: float = 0.5,
    seed: int = 0,
) -> list[Delivery]:
    """`unique` distinct messages plus `duplicate_share * unique` re-deliveries of random ones, shuffled.

    `hot_share` of the events belong to `hot_companies` companies (each with 20 connections); the rest are
    spread over the other companies (2 connections each).
    """
    rng = random.Random(seed)
    company_ids = [_uuid(rng) for _ in range(companies)]
    connections = {c: [_uuid(rng) for _ in range(20 if i < hot_companies else 2)] for i, c in enumerate(company_ids)}
    deliveries = []
    for _ in range(unique):
        hot = rng.random() < hot_share and hot_companies > 0
        company = rng.choice(company_ids[:hot_companies] if hot else company_ids[hot_companies:])
        body = _event(rng, company, rng.choice(connections[company]))
        deliveries.append(Delivery(f"msg_{rng.getrandbits(128):032x}", json.dumps(body, separators=(",", ":"))))
    deliveries += [rng.choice(deliveries) for _ in range(int(unique * duplicate_share))]
    rng.shuffle(deliveries)
    return deliveries


def signed(delivery: Delivery, secret: str = SECRET, timestamp: float | None = None) -> dict[str, str]:
    """Svix headers for one delivery, signed now (or at `timestamp`)."""
    return signed_headers(delivery.body, msg_id=delivery.message_id, secret=secret, timestamp=timestamp)
