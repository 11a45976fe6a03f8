"""What each route takes and answers, for the OpenAPI document (`service/api/openapi.py`): which pydantic
model (the one the handler builds or validates) goes with which route, and the query parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.actions import ActionOut, AuditOut, ReconnectOut
from schemas.api import (
    CompanyOut,
    ConnectionDetail,
    ConnectionOut,
    EventDetail,
    EventOut,
    IncidentOut,
    MissedWebhookOut,
    Page,
    SyncOut,
    TimelineItemOut,
)
from schemas.bundles import BundleList, BundleRefreshOut
from schemas.imports import ImportJobOut, ImportRequest
from schemas.ops import (
    DeadLetterDetail,
    DeadLetterPage,
    DryRunOut,
    HealthOut,
    PurgeOut,
    QueuesOut,
    ReadyOut,
    RedriveOut,
    RedriveRequest,
    ReplayJobOut,
    ReplayRequest,
    StreamStatusOut,
)
from schemas.statuses import FRESHNESS, HEALTH, PHASES
from schemas.subscriptions import (
    EVENT_TYPES,
    DeliveryDetail,
    DeliveryOut,
    ReplayIn,
    ReplayOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    SubscriptionWithSecret,
)
from schemas.tokens import RevokedOut, TokenIn, TokenOut

JSON = "application/json"


def param(name: str, schema: dict[str, Any], description: str, location: str = "query") -> dict[str, Any]:
    """An optional parameter's OpenAPI object; a list is given repeated or comma-separated."""
    exploded = {"style": "form", "explode": True} if schema.get("type") == "array" else {}
    return {"name": name, "in": location, "required": False, "schema": schema, "description": description} | exploded


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None
    """The success body; None for a body that is not JSON (see `media`) or no body at all."""
    status: int = 200
    request: type[BaseModel] | None = None
    query: tuple[dict[str, Any], ...] = ()
    media: str | None = JSON
    errors: tuple[int, ...] = ()
    """Statuses beyond those the access rule and the parameters imply (401, 403, 404, 400, 429)."""
    also: dict[int, type[BaseModel]] = field(default_factory=dict)
    """Other successful answers, e.g. a dry run's 200 beside a job's 202."""


def paged(summary: str, model: type[BaseModel], *query: dict[str, Any]) -> Operation:
    """A keyset-paged list of `model`, with `limit`, `cursor` and the `query` filters."""
    return Operation(summary, Page[model], query=(*PAGED, *query))  # type: ignore[valid-type]


def action(summary: str, response: type[BaseModel] = ActionOut, status: int = 202, **more: Any) -> Operation:
    """An action at Codat, which can meet there what `CODAT` lists."""
    return Operation(summary, response, status, errors=CODAT, **more)


def many(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "minLength": 1}, "description": description}


def one_of(*values: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "enum": list(values)}}


LIMIT = param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (default 50).")
PAGED = (LIMIT, param("cursor", {"type": "string"}, "The `next_cursor` of the previous page."))
COMPANIES = param("company_id", many("company ids"), "Only these companies (repeat, or separate with commas).")
CONNECTIONS = param("connection_id", many("connection ids"), "Only these connections (repeat, or comma-separated).")
ONE_CONNECTION = param("connection_id", {"type": "string"}, "Only this connection.")
TIME = {"type": "string", "format": "date-time"}
CODAT = (400, 409, 502, 503)
"""What an action can meet at Codat: a 400, a conflict, a refusal or failure, no answer."""

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/webhooks/codat"): Operation(
        "Receive a Codat webhook (Svix-signed; no bearer token)",
        None,
        202,
        media=None,
        errors=(400, 401, 403, 413, 415, 429, 503),
    ),
    ("GET", "/healthz"): Operation("The process answers", HealthOut),
    ("GET", "/readyz"): Operation("Each dependency, checked", ReadyOut, errors=(503,)),
    ("GET", "/openapi.json"): Operation("This document", None),
    ("GET", "/metrics"): Operation("Prometheus metrics of every process", None, media="text/plain"),
    ("GET", "/"): Operation("The dashboard (admin view)", None, media="text/html"),
    ("GET", "/embed/companies/{company_id}"): Operation("The dashboard of one company", None, media="text/html"),
    ("GET", "/static/{path}"): Operation("The dashboard's files", None, media="application/octet-stream"),
    ("GET", "/v1/companies"): paged("Every company", CompanyOut),
    ("GET", "/v1/companies/{company_id}/connections"): paged("A company's connections", ConnectionOut),
    ("GET", "/v1/connections"): paged(
        "Connections across companies, by id, with their freshness and health",
        ConnectionOut,
        param("freshness", one_of(*FRESHNESS), "Only connections in these states (repeat, or comma-separated)."),
        param("health", one_of(*HEALTH), "Only connections of these healths (repeat, or comma-separated)."),
        COMPANIES,
        param("source_type", many("source types"), "Only these source types (Accounting, Banking, ...)."),
    ),
    ("GET", "/v1/connections/{connection_id}"): Operation("One connection, with its data types", ConnectionDetail),
    ("GET", "/v1/connections/{connection_id}/syncs"): paged(
        "A connection's syncs, newest first",
        SyncOut,
        param("data_type", {"type": "string"}, "Only this data type."),
        param("phase", {"type": "string", "enum": list(PHASES)}, "Only syncs in this phase."),
    ),
    ("GET", "/v1/connections/{connection_id}/timeline"): paged(
        "What happened to a connection, newest first: lifecycle, syncs, requests, health and freshness changes, "
        "results found by reconciliation",
        TimelineItemOut,
    ),
    ("GET", "/v1/syncs/active"): paged("Syncs running now", SyncOut, COMPANIES, CONNECTIONS),
    ("GET", "/v1/events"): paged(
        "Stored webhooks, newest first",
        EventOut,
        COMPANIES,
        CONNECTIONS,
        param("event_type", many("event types"), "Only these event types."),
        param("outcome", many("outcomes"), "Only these outcomes (processed, ignored, failed, ...)."),
        param("since", TIME, "Received at or after."),
        param("until", TIME, "Received before."),
    ),
    ("GET", "/v1/events/{event_id}"): Operation("One stored webhook, with its body", EventDetail),
    ("GET", "/v1/audit"): paged(
        "Actions taken, newest first",
        AuditOut,
        COMPANIES,
        CONNECTIONS,
        param("action", one_of("refresh", "unlink", "delete", "reconnect"), "Only these actions."),
    ),
    ("GET", "/v1/stream"): Operation(
        "Changes as server-sent events (snapshot, then live; resumable with Last-Event-ID)",
        None,
        query=(
            COMPANIES,
            CONNECTIONS,
            param("last_event_id", {"type": "string"}, "Resume after this event (the header wins)."),
            param("access_token", {"type": "string"}, "The token, when SYNCTRACK_STREAM_TOKEN_IN_QUERY is on."),
            param("Last-Event-ID", {"type": "string"}, "Resume after this event.", location="header"),
        ),
        media="text/event-stream",
        errors=(503,),
    ),
    ("GET", "/v1/stream/status"): Operation("This process's stream clients and reader", StreamStatusOut),
    ("POST", "/v1/companies/{company_id}/refresh"): action(
        "Refresh all of a company's data at Codat", query=(ONE_CONNECTION,)
    ),
    ("POST", "/v1/companies/{company_id}/refresh/{data_type}"): action(
        "Refresh one data type at Codat", query=(ONE_CONNECTION,)
    ),
    ("GET", "/v1/companies/{company_id}/bundles"): Operation(
        "A company's bundles (SYNCTRACK_BUNDLES): as of when, how far apart, what is stale", BundleList
    ),
    ("POST", "/v1/companies/{company_id}/bundles/{name}/refresh"): action(
        "Refresh a bundle's members that are not fresh (all of them with all=true) at Codat",
        BundleRefreshOut,
        query=(param("all", {"type": "boolean"}, "Refresh every member, fresh or not."),),
    ),
    ("POST", "/v1/connections/{connection_id}/unlink"): action("Unlink (deauthorise) a connection, keeping its data"),
    ("DELETE", "/v1/connections/{connection_id}"): action("Delete a connection at Codat (irreversible)"),
    ("POST", "/v1/connections/{connection_id}/reconnect"): action(
        "Ask Codat for a fresh link URL for the customer to re-link the connection (single-use, never stored)",
        ReconnectOut,
        200,
    ),
    ("POST", "/v1/tokens"): Operation(
        "Mint a company-scoped token (admin only)", TokenOut, 201, request=TokenIn, errors=(409,)
    ),
    ("POST", "/v1/tokens/{token_id}/revoke"): Operation(
        "Revoke a company-scoped token: 401 from its next request on, in every web process (admin only)",
        RevokedOut,
        errors=(400, 503),
    ),
    ("POST", "/v1/subscriptions"): Operation(
        "Create an outbound subscription (the answer shows its secret)",
        SubscriptionWithSecret,
        201,
        request=SubscriptionIn,
    ),
    ("GET", "/v1/subscriptions"): paged(
        "Subscriptions, newest first",
        SubscriptionOut,
        param("enabled", {"type": "boolean"}, "Only enabled (true) or disabled (false) ones."),
    ),
    ("GET", "/v1/subscriptions/{subscription_id}"): Operation("One subscription", SubscriptionOut),
    ("PATCH", "/v1/subscriptions/{subscription_id}"): Operation(
        "Change a subscription", SubscriptionOut, request=SubscriptionPatch
    ),
    ("DELETE", "/v1/subscriptions/{subscription_id}"): Operation(
        "Delete a subscription and its deliveries", None, 204, media=None
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/rotate-secret"): Operation(
        "Rotate the signing secret (the old one keeps signing for the overlap)", SubscriptionWithSecret
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/test"): Operation("Send a ping now", DeliveryOut, errors=(409,)),
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries"): paged(
        "A subscription's deliveries, newest first",
        DeliveryOut,
        param("status", one_of("pending", "delivered", "failed"), "Only deliveries in these states."),
        param("event_type", one_of(*EVENT_TYPES, "ping"), "Only these event types."),
    ),
    ("GET", "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}"): Operation(
        "One delivery, with its body", DeliveryDetail
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry"): Operation(
        "Retry a delivery now", DeliveryOut, 202, errors=(409,)
    ),
    ("POST", "/v1/subscriptions/{subscription_id}/replay"): Operation(
        "Re-send the changes of a time range", ReplayOut, 202, request=ReplayIn, errors=(409,)
    ),
    ("POST", "/v1/admin/replay"): Operation(
        "Replay stored webhooks (or count them with dry_run)",
        ReplayJobOut,
        202,
        request=ReplayRequest,
        also={200: DryRunOut},
    ),
    ("GET", "/v1/admin/missed"): paged(
        "Missed webhooks: results reconciliation folded that no webhook had reported, newest found first",
        MissedWebhookOut,
        param("since", TIME, "Found at or after."),
    ),
    ("GET", "/v1/platforms/incidents"): paged(
        "Platform incidents, newest first",
        IncidentOut,
        param("status", {"type": "string", "enum": ["open", "closed"]}, "Only open or closed ones."),
    ),
    ("GET", "/v1/admin/replays"): paged("Replay jobs, newest first", ReplayJobOut),
    ("GET", "/v1/admin/replays/{job_id}"): Operation("One replay job and its progress", ReplayJobOut),
    ("POST", "/v1/admin/replays/{job_id}/cancel"): Operation("Cancel a replay job", ReplayJobOut, errors=(409,)),
    ("POST", "/v1/admin/replays/{job_id}/resume"): Operation(
        "Resume a replay job",
        ReplayJobOut,
        202,
        query=(
            param("rate", {"type": "number", "minimum": 0}, "Events per second."),
            param("max_backlog", {"type": "integer", "minimum": 1}, "Most events waiting in the queue."),
        ),
        errors=(409,),
    ),
    ("POST", "/v1/admin/imports"): Operation(
        "Import an existing Codat account (every company it lists, or those named) on the workers",
        ImportJobOut,
        202,
        request=ImportRequest,
    ),
    ("GET", "/v1/admin/imports"): paged("Import jobs, newest first", ImportJobOut),
    ("GET", "/v1/admin/imports/{job_id}"): Operation("One import job and its progress", ImportJobOut),
    ("POST", "/v1/admin/imports/{job_id}/resume"): Operation(
        "Resume an import job, retrying the companies that failed", ImportJobOut, 202, errors=(409,)
    ),
    ("GET", "/v1/admin/queues"): Operation(
        "Each queue's depth, the age of its oldest waiting message and its dead letters", QueuesOut, errors=(503,)
    ),
    ("GET", "/v1/admin/dead-letters"): Operation("Dead letters, newest first", DeadLetterPage, query=PAGED),
    ("POST", "/v1/admin/dead-letters/redrive"): Operation(
        "Put dead letters back on the queue", RedriveOut, request=RedriveRequest
    ),
    ("POST", "/v1/admin/dead-letters/purge"): Operation("Delete dead letters", PurgeOut, request=RedriveRequest),
    ("GET", "/v1/admin/dead-letters/{letter_id}"): Operation("One dead letter, with its traceback", DeadLetterDetail),
}
