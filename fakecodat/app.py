"""The fake Codat as a Starlette app: the Codat API calls Synctrack makes plus a control API under `/_control`.

Codat API: companies and their connections (list, get, PATCH status, DELETE), `data/all`,
`data/queue/{dataType}`, `data/history` (paged) and `data/history/{datasetId}`, `dataStatus`, and the sync
settings of the client (`/profile/syncSettings`) and of each company (`/companies/{id}/syncSettings`).
Every Codat call passes the gate first: API key check (when one is configured), injected faults,
and a request log the tests read (`GET /_control/requests`). Codat's Link page for a connection
(`GET /companies/{companyId}/connections/{connectionId}/start`, opened by a customer's browser) is not
part of the API and skips the gate (`fakecodat.links`).

Control API: seed companies, change settings, steer webhooks (drop, hold, release out of order,
duplicate, redeliver), inject faults, change a connection's status behind Synctrack's back, set sync schedules.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fakecodat.faults import Faults, codat_error
from fakecodat.quota import Quota
from fakecodat.webhooks import Deliverer
from fakecodat.world import CodatProblem, Config, World

MAX_PAGE_SIZE = 5000
KEEP_REQUESTS = 10_000
LINK_START = re.compile(r"^/companies/[^/]+/connections/[^/]+/start$")
"""Codat's Link page for a connection: a page for the customer's browser, not an API call."""


class CodatGate:
    """ASGI middleware in front of the Codat API: auth, faults, request log."""

    def __init__(self, app: ASGIApp, world: World, faults: Faults, log: list[dict[str, Any]]) -> None:
        self.app, self.world, self.faults, self.log = app, world, faults, log
        self.quota = Quota(world.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_control") or LINK_START.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "status": None,
        }
        self.log.append(entry)
        del self.log[:-KEEP_REQUESTS]
        key = self.world.config.api_key
        if key is not None and request.headers.get("authorization") != f"Basic {key}":
            entry["status"] = 401
            await codat_error(401, "Unauthorized: the API key is not valid")(scope, receive, send)
            return
        quota = self.quota.take()
        if quota is not None and quota.spent:
            entry["status"] = 429
            headers = quota.headers() | {"Retry-After": str(quota.retry_after())}
            await codat_error(429, "Rate limit exceeded", headers)(scope, receive, send)
            return
        injected = await self.faults.apply(request.method, request.url.path)
        if injected is not None:
            entry["status"], entry["injected"] = injected.status_code, True
            await injected(scope, receive, send)
            return

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                if quota is not None:
                    extra = [(k.lower().encode(), v.encode()) for k, v in quota.headers().items()]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, record)


def _world(request: Request) -> World:
    world: World = request.app.state.world
    return world


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    try:
        page = max(1, int(request.query_params.get("page", "1")))
        size = min(MAX_PAGE_SIZE, max(1, int(request.query_params.get("pageSize", "100"))))
    except ValueError:
        return codat_error(400, "page and pageSize must be integers")
    order = request.query_params.get("orderBy", "-requested")
    field = order.lstrip("-")
    if items and field in items[0]:
        items = sorted(items, key=lambda item: str(item.get(field) or ""), reverse=order.startswith("-"))
    chunk = items[(page - 1) * size : page * size]
    return JSONResponse({"results": chunk, "pageNumber": page, "pageSize": size, "totalResults": len(items)})


def codat(handler: Any) -> Any:
    """Turn a `CodatProblem` raised by the world into Codat's error answer."""

    async def wrapped(request: Request) -> Response:
        try:
            result: Response = await handler(request)
            return result
        except CodatProblem as problem:
            return codat_error(problem.status, problem.message)

    return wrapped


@codat
async def list_companies(request: Request) -> Response:
    """Codat's paging: `results`, `pageNumber`, `pageSize`, `totalResults` and `_links` (`self`, `current`,
    and `next` / `previous` where there are such pages), companies in the order they were created."""
    try:
        page = max(1, int(request.query_params.get("page", "1")))
        size = min(MAX_PAGE_SIZE, max(1, int(request.query_params.get("pageSize", "100"))))
    except ValueError:
        return codat_error(400, "page and pageSize must be integers")
    world = _world(request)
    ids = list(world.companies)
    chunk = [world.listed(company_id) for company_id in ids[(page - 1) * size : page * size]]
    links: dict[str, Any] = {
        "self": {"href": "/companies"},
        "current": {"href": f"/companies?page={page}&pageSize={size}"},
    }
    if page * size < len(ids):
        links["next"] = {"href": f"/companies?page={page + 1}&pageSize={size}"}
    if page > 1:
        links["previous"] = {"href": f"/companies?page={page - 1}&pageSize={size}"}
    body = {"results": chunk, "pageNumber": page, "pageSize": size, "totalResults": len(ids), "_links": links}
    return JSONResponse(body)


@codat
async def get_company(request: Request) -> Response:
    return JSONResponse(_world(request).listed(request.path_params["company_id"]))


@codat
async def list_connections(request: Request) -> Response:
    world = _world(request)
    conns = [world.shown(c) for c in world.company_connections(request.path_params["company_id"])]
    return _page(request, conns)


@codat
async def connection(request: Request) -> Response:
    world, p = _world(request), request.path_params
    if request.method == "GET":
        return JSONResponse(world.shown(world.connection(p["company_id"], p["connection_id"])))
    if request.method == "DELETE":
        world.delete(p["company_id"], p["connection_id"])
        return Response(status_code=200)
    body = await request.json()
    if not isinstance(body, dict) or body.get("status") != "Unlinked":
        raise CodatProblem(400, "Only a status of Unlinked can be set")
    return JSONResponse(world.set_status(p["company_id"], p["connection_id"], "Unlinked"))


@codat
async def refresh_all(request: Request) -> Response:
    _world(request).refresh_all(request.path_params["company_id"])
    return Response(status_code=204)


@codat
async def queue_data_type(request: Request) -> Response:
    p = request.path_params
    op = _world(request).queue(p["company_id"], p["data_type"], request.query_params.get("connectionId"))
    return JSONResponse(op)


@codat
async def history(request: Request) -> Response:
    ops = [dict(op) for op in _world(request).company_operations(request.path_params["company_id"])]
    return _page(request, ops)


@codat
async def pull_operation(request: Request) -> Response:
    world, p = _world(request), request.path_params
    world.company(p["company_id"])
    op = world.operations.get(p["dataset_id"])
    if op is None or op["companyId"] != p["company_id"]:
        raise CodatProblem(404, f"Dataset {p['dataset_id']} not found")
    return JSONResponse(op)


@codat
async def data_status(request: Request) -> Response:
    return JSONResponse(_world(request).data_status(request.path_params["company_id"]))


async def link_start(request: Request) -> Response:
    """Codat's Link page: the customer links the connection again (at once, in the fake). A one-time
    link works once, within its lifetime; otherwise 410 with a page that says why."""
    p = request.path_params
    try:
        conn = _world(request).open_link(p["company_id"], p["connection_id"], request.query_params.get("otp"))
    except CodatProblem as problem:
        return _link_page(problem.status, "This link cannot be used", problem.message)
    name = html.escape(str(conn.get("platformName") or "the platform"))
    return _link_page(200, f"{name} is linked", f"Access to {name} was granted. You can close this tab.")


def _link_page(status: int, title: str, text: str) -> HTMLResponse:
    body = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@codat
async def client_sync_settings(request: Request) -> Response:
    return JSONResponse(_world(request).sync_settings.client_body())


@codat
async def company_sync_settings(request: Request) -> Response:
    world = _world(request)
    company_id = world.company(request.path_params["company_id"])["id"]
    return JSONResponse(world.sync_settings.company_body(company_id))


# Control ---------------------------------------------------------------------------------------------


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    body = json.loads(raw) if raw else {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


async def seed(request: Request) -> Response:
    """`{"count": 3}` or `{"companies": [{"name", "platforms": ["xero"], "status", "id", "description", "tags",
    "history", "hold"}]}`, plus `announce` (connection webhooks, default true), `initial_read` (default true),
    `history` (finished pull operations per connection, made without webhooks; default 0) and `hold` (every
    connection's pull operations held at that status, e.g. `Queued`, until released; default none)."""
    body = await _body(request)
    specs = body.get("companies") or [{} for _ in range(int(body.get("count", 1)))]
    world = _world(request)
    try:
        created = [
            world.add_company(
                spec.get("name"),
                spec.get("platforms"),
                company_id=spec.get("id"),
                status=spec.get("status", "Linked"),
                announce=body.get("announce", True),
                initial_read=body.get("initial_read", True),
                history=int(spec.get("history", body.get("history", 0))),
                description=spec.get("description"),
                tags=spec.get("tags"),
                hold=spec.get("hold", body.get("hold")),
            )
            for spec in specs
        ]
    except KeyError as exc:
        return JSONResponse({"error": f"unknown platform {exc.args[0]}"}, status_code=400)
    except CodatProblem as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    return JSONResponse({"companies": created}, status_code=201)


async def control_config(request: Request) -> Response:
    state = request.app.state
    if request.method == "POST":
        body = await _body(request)
        for name in ("receiver_url", "secret"):
            if name in body:
                setattr(state.deliverer, name, body.pop(name))
        for name, value in body.items():
            if not hasattr(state.world.config, name):
                return JSONResponse({"error": f"unknown setting {name}"}, status_code=400)
            setattr(state.world.config, name, value)
    return JSONResponse(asdict(state.world.config) | {"receiver_url": state.deliverer.receiver_url})


async def webhooks(request: Request) -> Response:
    deliverer: Deliverer = request.app.state.deliverer
    if request.method == "POST":
        body = await _body(request)
        if body.get("mode") not in (None, "deliver", "drop", "hold"):
            return JSONResponse({"error": "mode is deliver, drop or hold"}, status_code=400)
        deliverer.mode = body.get("mode", deliverer.mode)
        deliverer.duplicates = int(body.get("duplicates", deliverer.duplicates))
    return JSONResponse(
        {
            "mode": deliverer.mode,
            "duplicates": deliverer.duplicates,
            "held": len(deliverer.held),
            "messages": [m.summary() for m in deliverer.messages],
        }
    )


async def release(request: Request) -> Response:
    body = await _body(request)
    count = request.app.state.deliverer.release(body.get("order", "fifo"))
    return JSONResponse({"released": count})


async def redeliver(request: Request) -> Response:
    body = await _body(request)
    return JSONResponse({"redelivered": request.app.state.deliverer.redeliver(body.get("ids"))})


async def faults(request: Request) -> Response:
    state = request.app.state
    if request.method == "DELETE":
        state.faults.clear()
    elif request.method == "POST":
        body = await _body(request)
        try:
            for spec in body.get("rules", [body] if body else []):
                state.faults.add(spec)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"rules": [rule.describe() for rule in state.faults.rules]})


@codat
async def set_connection_status(request: Request) -> Response:
    """`{"status": "Unlinked"|"Deauthorized"|"Linked", "notify": false}` — as if done in Codat's portal;
    `{"hold": "Queued"}` holds its pull operations at that status until `{"hold": null}` releases them."""
    body = await _body(request)
    world = _world(request)
    conn = world.connections.get(request.path_params["connection_id"])
    if conn is None:
        raise CodatProblem(404, "Data connection not found")
    if body.get("delete"):
        world.delete(conn["_company"], conn["id"], notify=body.get("notify", True))
        return JSONResponse({"deleted": conn["id"]})
    if "hold" in body:
        return JSONResponse(world.hold(conn["_company"], conn["id"], body["hold"]))
    return JSONResponse(world.set_status(conn["_company"], conn["id"], body["status"], body.get("notify", True)))


async def links(request: Request) -> Response:
    """Every one-time link issued (`one_time_links`), oldest first: url, otp, times, when it was used."""
    return JSONResponse({"links": _world(request).links.describe()})


async def control_sync_settings(request: Request) -> Response:
    """`{"schedules": {"invoices": 168, "*": 24}, "company_id": "…"}`: the client's `syncSchedule`s (hours), or
    one company's (null gives a data type back to the client's); `GET` shows them all."""
    settings = _world(request).sync_settings
    if request.method == "POST":
        body = await _body(request)
        schedules, company_id = body.get("schedules"), body.get("company_id")
        if not isinstance(schedules, dict):
            return JSONResponse({"error": "schedules must be an object of data type -> hours"}, status_code=400)
        if company_id is not None and company_id not in _world(request).companies:
            return JSONResponse({"error": f"unknown company {company_id}"}, status_code=404)
        try:
            settings.change(schedules, company_id)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(settings.describe())


async def requests_log(request: Request) -> Response:
    if request.method == "DELETE":
        request.app.state.request_log.clear()
    return JSONResponse({"requests": request.app.state.request_log})


def create_fake_codat(config: Config | None = None, receiver_url: str | None = None, secret: str = "") -> Starlette:
    """The fake Codat app; webhooks go to `receiver_url`, signed with `secret` (``whsec_…``)."""
    deliverer = Deliverer(receiver_url, secret)
    world = World(config or Config(), deliverer)
    rules = Faults()
    request_log: list[dict[str, Any]] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        deliverer.start()
        traffic = asyncio.create_task(world.traffic())
        yield
        traffic.cancel()
        await world.stop()
        await deliverer.stop()

    base = "/companies/{company_id}"
    routes = [
        Route("/companies", list_companies),
        Route(base, get_company),
        Route(f"{base}/connections", list_connections),
        Route(f"{base}/connections/{{connection_id}}", connection, methods=["GET", "PATCH", "DELETE"]),
        Route(f"{base}/data/all", refresh_all, methods=["POST"]),
        Route(f"{base}/data/queue/{{data_type}}", queue_data_type, methods=["POST"]),
        Route(f"{base}/data/history", history),
        Route(f"{base}/data/history/{{dataset_id}}", pull_operation),
        Route(f"{base}/dataStatus", data_status),
        Route(f"{base}/connections/{{connection_id}}/start", link_start),
        Route(f"{base}/syncSettings", company_sync_settings),
        Route("/profile/syncSettings", client_sync_settings),
        Route("/_control/companies", seed, methods=["POST"]),
        Route("/_control/config", control_config, methods=["GET", "POST"]),
        Route("/_control/webhooks", webhooks, methods=["GET", "POST"]),
        Route("/_control/webhooks/release", release, methods=["POST"]),
        Route("/_control/webhooks/redeliver", redeliver, methods=["POST"]),
        Route("/_control/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_control/connections/{connection_id}", set_connection_status, methods=["POST"]),
        Route("/_control/requests", requests_log, methods=["GET", "DELETE"]),
        Route("/_control/links", links),
        Route("/_control/sync-settings", control_sync_settings, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.world, app.state.deliverer, app.state.faults, app.state.request_log = world, deliverer, rules, request_log
    app.add_middleware(CodatGate, world=world, faults=rules, log=request_log)
    return app
