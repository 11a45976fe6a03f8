"""Who may call which route: one table, read by the auth middleware (`service/security/middleware.py`).

Every route has a rule (a test checks it); a `/v1/*` route without one answers to admins only. A company-scoped
token gets 404 for another company's resources, exactly as for missing ones, and 403 for a right it lacks.

Before the tenant checks read the database, `check_parameters` makes sure a handler can trust its parameters: a
control character in a query parameter is 400 `invalid_parameter` (PostgreSQL refuses a NUL outright); a path id
holding one, or a company or connection id off the one id syntax (`schemas/ids.py`), is the 404 of a missing id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import parse_qsl

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.types import Scope

from schemas.errors import ApiError, ErrorCode
from schemas.ids import is_valid_id
from service.security.tokens import Principal
from workers.ledger.tables import Connection, WebhookEvent


class Kind(StrEnum):
    PUBLIC = "public"
    SIGNATURE = "signature"
    """Authenticated by the webhook signature (the receiver), not by a token."""
    METRICS = "metrics"
    """Public unless `SYNCTRACK_METRICS_REQUIRE_TOKEN`, then admin."""
    ADMIN = "admin"
    COMPANY = "company"
    """Admins, and company-scoped tokens of the request's company holding `right`."""


Target = Literal["company", "connection", "event", "filter"]
"""Where the request's company is: the `{company_id}` path parameter, the company of the connection or stored event
named in the path, or (``filter``: lists and the stream) the `company_id=` query values, each exactly the token's."""


@dataclass(frozen=True)
class Rule:
    kind: Kind
    right: str | None = None
    target: Target | None = None
    query_token: bool = False
    """The token may come as `?access_token=` (when `SYNCTRACK_STREAM_TOKEN_IN_QUERY`): EventSource sends no headers."""


PUBLIC = Rule(Kind.PUBLIC)
SIGNATURE = Rule(Kind.SIGNATURE)
METRICS = Rule(Kind.METRICS)
ADMIN = Rule(Kind.ADMIN)


def company(right: str, target: Target, *, query_token: bool = False) -> Rule:
    return Rule(Kind.COMPANY, right, target, query_token)


RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/webhooks/codat"): SIGNATURE,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    # The dashboard's page and files are public; the page's API calls carry a token.
    ("GET", "/"): PUBLIC,
    ("GET", "/embed/companies/{company_id}"): PUBLIC,
    ("*", "/static"): PUBLIC,
    # Reads
    ("GET", "/v1/companies"): ADMIN,
    ("GET", "/v1/companies/{company_id}/connections"): company("read", "company"),
    ("GET", "/v1/connections"): company("read", "filter"),
    ("GET", "/v1/connections/{connection_id}"): company("read", "connection"),
    ("GET", "/v1/connections/{connection_id}/syncs"): company("read", "connection"),
    ("GET", "/v1/connections/{connection_id}/timeline"): company("read", "connection"),
    ("GET", "/v1/syncs/active"): company("read", "filter"),
    ("GET", "/v1/events"): company("read", "filter"),
    ("GET", "/v1/events/{event_id}"): company("read", "event"),
    ("GET", "/v1/audit"): company("read", "filter"),
    ("GET", "/v1/stream"): company("read", "filter", query_token=True),
    ("GET", "/v1/stream/status"): ADMIN,
    ("GET", "/v1/companies/{company_id}/bundles"): company("read", "company"),
    # Actions
    ("POST", "/v1/companies/{company_id}/refresh"): company("refresh", "company"),
    ("POST", "/v1/companies/{company_id}/refresh/{data_type}"): company("refresh", "company"),
    ("POST", "/v1/companies/{company_id}/bundles/{name}/refresh"): company("refresh", "company"),
    ("POST", "/v1/connections/{connection_id}/unlink"): company("disconnect", "connection"),
    ("DELETE", "/v1/connections/{connection_id}"): company("delete", "connection"),
    ("POST", "/v1/connections/{connection_id}/reconnect"): company("reconnect", "connection"),
    # Admin only
    ("POST", "/v1/tokens"): ADMIN,
    ("POST", "/v1/tokens/{token_id}/revoke"): ADMIN,
    ("POST", "/v1/admin/imports"): ADMIN,
    ("GET", "/v1/admin/imports"): ADMIN,
    ("GET", "/v1/admin/imports/{job_id}"): ADMIN,
    ("POST", "/v1/admin/imports/{job_id}/resume"): ADMIN,
    ("GET", "/v1/platforms/incidents"): ADMIN,
}
PREFIX_RULES: tuple[tuple[str, Rule], ...] = (
    ("/v1/admin/", ADMIN),
    ("/v1/subscriptions", ADMIN),
)
"""Whole families of admin routes, whatever their methods."""


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of the route declared as `path` (a template such as `/v1/connections/{connection_id}`)."""
    method = "GET" if method == "HEAD" else method
    rule = RULES.get((method, path)) or RULES.get(("*", path))
    if rule is not None:
        return rule
    for prefix, prefixed in PREFIX_RULES:
        if path.startswith(prefix):
            return prefixed
    return None


def not_found(kind: str, ident: str) -> ApiError:
    # The same sentence the handlers use for a missing resource, so the two cannot be told apart.
    return ApiError(404, ErrorCode.NOT_FOUND, f"no {kind} with id {ident!r}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ID_PARAMETERS = {"company_id": "company", "connection_id": "connection"}  # and the word their 404 uses


def check_parameters(scope: Scope, path_params: dict[str, Any]) -> None:
    """Raise ApiError (400 for a query parameter, 404 for a path id that cannot exist) unless all are usable."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    for name, value in query:
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise ApiError(400, ErrorCode.INVALID_PARAMETER, f"the query parameter {name!r} holds a control character")
    for name, value in path_params.items():
        text = str(value)
        if _CONTROL.search(text) or (name in ID_PARAMETERS and not is_valid_id(text)):
            raise not_found(ID_PARAMETERS.get(name) or name.removesuffix("_id").replace("_", " "), text)


def needs_lookup(rule: Rule, query: list[tuple[str, str]]) -> bool:
    """Whether `check_company` reads the database for this request (else it is pure and quick)."""
    if rule.target in ("connection", "event"):
        return True
    return rule.target == "company" and any(key == "connection_id" for key, _ in query)


def check_company(
    principal: Principal,
    rule: Rule,
    path_params: dict[str, str],
    query: list[tuple[str, str]],
    engine: Engine,
) -> list[tuple[str, str]]:
    """For a company-scoped principal: raise ApiError (404) unless the request stays in its company; a stored
    event of no company is an admin's. Returns the query to pass on (the company filter forced for ``filter``
    routes). Blocking when `needs_lookup`: call it in a thread then."""
    own = principal.company_id
    assert own is not None and rule.target is not None
    if rule.target == "company" and path_params.get("company_id") != own:
        raise not_found("company", path_params.get("company_id", ""))
    if rule.target == "event":
        event_id = path_params["event_id"]
        with Session(engine) as session:
            found = session.exec(select(WebhookEvent.id, WebhookEvent.company_id).where(WebhookEvent.id == event_id))
            row = found.first()
        if row is not None and row[1] != own:
            raise not_found("event", event_id)
    if rule.target != "filter":
        in_path = [path_params["connection_id"]] if rule.target == "connection" else []
        in_query = [part.strip() for key, value in query if key == "connection_id" for part in value.split(",")]
        named = [ident for ident in in_path + in_query if ident]
        owners: dict[str, str] = {}
        if named:
            with Session(engine) as session:
                query_owners = select(Connection.id, Connection.company_id).where(col(Connection.id).in_(set(named)))
                owners = dict(session.exec(query_owners).all())
        for ident in in_path:  # unknown: the handler answers the same 404
            if owners.get(ident, own) != own:
                raise not_found("connection", ident)
        for ident in in_query:  # a known connection of the token's company, or nothing is done
            if owners.get(ident) != own:
                raise not_found("connection", ident)
        return query
    for key, value in query:  # each value compared whole: "A,B" or " " is not the token's company
        if key == "company_id" and value != own:
            raise not_found("company", value)
    return [(key, value) for key, value in query if key != "company_id"] + [("company_id", own)]
