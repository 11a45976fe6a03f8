"""`GET /openapi.json`: the OpenAPI 3.1 document of the whole API, built on first request from the app's routes,
the access rules (`service/security/rules.py`) and `service/api/docs.py`. A route missing from the table is
listed under `x-undocumented`."""

from __future__ import annotations

import re
from typing import Any
from weakref import WeakKeyDictionary

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from schemas.api import ErrorBody
from service.api.docs import JSON, OPERATIONS, Operation
from service.security.rules import Kind, Rule, rule_for

REF = "#/components/schemas/{model}"
REASONS = {
    400: "Invalid parameter or body",
    401: "Missing, malformed, unknown or expired token (or signature, for webhooks)",
    403: "The token may not do this (admin only, or a right it lacks), or a forbidden network",
    404: "No such resource (or one of another company, for a company token)",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Not JSON",
    429: "Too many failed authentications from this source, or (an action) too many actions by one company's tokens",
    502: "Codat refused or failed",
    503: "A dependency is unavailable; retry later",
}


def app_operations(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route: a Mount is documented as `<path>/{path}`."""
    found = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    found.append((method, route.path))
        elif isinstance(route, Mount):
            found.append(("GET", route.path + "/{path}"))
    return found


def _security(rule: Rule) -> tuple[list[dict[str, list[str]]], str]:
    if rule.kind in (Kind.PUBLIC, Kind.SIGNATURE):
        return [], ""
    if rule.kind == Kind.METRICS:
        return [{}, {"bearer": []}], " Needs an admin token when SYNCTRACK_METRICS_REQUIRE_TOKEN is on."
    if rule.kind == Kind.ADMIN:
        return [{"bearer": []}], " Admin token only."
    right = f" with the `{rule.right}` right" if rule.right else ""
    return [{"bearer": []}], f" Admin token, or a token of the company concerned{right}."


def operation(method: str, path: str, op: Operation, refs: dict[tuple[Any, str], Any]) -> dict[str, Any]:
    rule = rule_for(method, path.removesuffix("/{path}")) or Rule(Kind.ADMIN)
    security, who = _security(rule)
    path_names = re.findall(r"{(\w+)(?::\w+)?}", path)
    doc: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_') or 'root'}",
        "summary": op.summary,
        "description": op.summary + "." + who,
        "tags": [path.strip("/").split("/")[1 if path.startswith("/v1/") else 0] or "dashboard"],
        "security": security,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in path_names
        ]
        + list(op.query),
    }
    if op.request is not None:
        schema = refs[(op.request, "validation")]
        doc["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    responses: dict[str, Any] = {}
    for status, model in {op.status: op.response, **op.also}.items():
        answer: dict[str, Any] = {"description": "Success"}
        if model is not None:
            answer["content"] = {op.media or JSON: {"schema": refs[(model, "serialization")]}}
        elif op.media is not None:
            answer["content"] = {op.media: {"schema": {"type": "object"} if op.media == JSON else {"type": "string"}}}
        responses[str(status)] = answer
    errors = set(op.errors)
    if security:
        errors |= {401, 429}
    if rule.kind == Kind.ADMIN or rule.right:
        errors.add(403)
    if path_names or rule.target == "filter":  # a company token naming another company in a filter: 404
        errors.add(404)
    if op.query or op.request is not None:
        errors.add(400)
    if op.request is not None and path.startswith("/v1/"):  # not application/json; over SYNCTRACK_MAX_ADMIN_BODY_BYTES
        errors |= {413, 415}
    for status in sorted(errors):
        if str(status) not in responses:
            schema = {"schema": {"$ref": REF.format(model="ErrorBody")}}
            responses[str(status)] = {"description": REASONS.get(status, "Error"), "content": {JSON: schema}}
    if path == "/readyz":
        responses["503"] = {
            "description": "Not ready",
            "content": {JSON: {"schema": refs[(op.response, "serialization")]}} if op.response else {},
        }
    doc["responses"] = responses
    return doc


def build_document(routes: list[BaseRoute]) -> dict[str, Any]:
    present = app_operations(routes)
    documented = [(key, OPERATIONS[key]) for key in present if key in OPERATIONS]
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for _, op in documented:
        wanted += [(m, "serialization") for m in (op.response, *op.also.values()) if m is not None]
        if op.request is not None:
            wanted.append((op.request, "validation"))
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in documented:
        paths.setdefault(path, {})[method.lower()] = operation(method, path, op, dict(refs.items()))
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Synctrack API",
            "version": "1",
            "description": "Codat connections and their syncs. Authenticate with `Authorization: Bearer <token>`: "
            "an admin token, or a company-scoped token from `POST /v1/tokens`.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    missing = [f"{method} {path}" for method, path in present if (method, path) not in OPERATIONS]
    if missing:
        document["x-undocumented"] = missing
    return document


_documents: WeakKeyDictionary[object, dict[str, Any]] = WeakKeyDictionary()
"""Each app's document, built on first request: an app's routes never change."""


async def openapi_json(request: Request) -> JSONResponse:
    document = _documents.get(request.app)
    if document is None:
        document = _documents[request.app] = build_document(request.app.routes)
    return JSONResponse(document)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
