"""Bearer tokens and tenant isolation over HTTP, route by route (`service/security/`).

Two companies live in the ledger and in the fake Codat. A company token of A must find B's resources
exactly as it finds missing ones (404, same sentence), nothing reaches Codat for B, lists show A only,
and each action needs its right. Admin-only routes refuse company tokens; nothing under /v1 answers
without a token.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.api.openapi import app_operations
from service.app import create_app
from service.security.middleware import take_query_token
from service.security.rules import RULES, Kind, rule_for
from service.security.tokens import RIGHTS
from tests.support.auth import ADMIN_HEADERS, ADMIN_TOKEN_HASH, AUTH_SETTINGS, bearer, company_token
from tests.support.builders import connection_event, iso, read_completed
from tests.support.ledger_fill import deliver
from workers.runtime.db import upgrade

KEY = "test-codat-key-for-auth"


@dataclass(frozen=True)
class Target:
    company: str
    connection: str
    event: str


UNKNOWN = Target("no-such-company", "no-such-connection", "no-such-event")


@dataclass
class World:
    a: Target
    b: Target


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCodatServer]:
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, fake: FakeCodatServer) -> Settings:
    """One ledger and app for the module (the tests only add to it); failure rate limits off."""
    import fakeredis

    import workers.runtime.broker as broker

    broker._embedded_server = fakeredis.FakeServer()
    return Settings(
        embedded=True,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('auth') / 'ledger.db'}",
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        codat_base_url=fake.url,
        codat_api_key=KEY,
        codat_max_retries=0,
        failure_limit_per_minute=0,
        bundles={"ar": ["invoices", "payments"]},
        _env_file=None,
        **AUTH_SETTINGS,  # type: ignore[arg-type]
    )


def company_in_both(fake: FakeCodatServer, settings: Settings) -> Target:
    """A company the fake Codat and the ledger both know: one linked connection with a sync running."""
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    ids = {"company_id": company["id"], "connection_id": company["connections"][0]["id"]}
    stamp = iso(datetime.now(UTC))
    (event,) = deliver(settings, {**connection_event(**ids), "generatedDate": stamp})
    deliver(settings, {**read_completed([("invoices", "Fetching")], **ids), "generatedDate": stamp})
    return Target(company["id"], ids["connection_id"], event)


@pytest.fixture(scope="module")
def world(fake: FakeCodatServer, settings: Settings) -> World:
    upgrade(settings.database_url)
    found = World(company_in_both(fake, settings), company_in_both(fake, settings))
    fake.control.clear_requests()
    return found


@pytest.fixture(scope="module")
def client(settings: Settings, world: World) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


Request = Callable[[Target, Target], tuple[str, str]]
"""(the token's company, the target) -> (method, url)."""

COMPANY_ROUTES: dict[tuple[str, str], Request] = {
    ("GET", "/v1/companies/{company_id}/connections"): lambda own, t: ("GET", f"/v1/companies/{t.company}/connections"),
    ("GET", "/v1/connections"): lambda own, t: ("GET", f"/v1/connections?company_id={t.company}"),
    ("GET", "/v1/connections/{connection_id}"): lambda own, t: ("GET", f"/v1/connections/{t.connection}"),
    ("GET", "/v1/connections/{connection_id}/syncs"): lambda own, t: ("GET", f"/v1/connections/{t.connection}/syncs"),
    ("GET", "/v1/connections/{connection_id}/timeline"): lambda own, t: (
        "GET",
        f"/v1/connections/{t.connection}/timeline",
    ),
    ("GET", "/v1/syncs/active"): lambda own, t: ("GET", f"/v1/syncs/active?company_id={t.company}"),
    ("GET", "/v1/events"): lambda own, t: ("GET", f"/v1/events?company_id={t.company}"),
    ("GET", "/v1/events/{event_id}"): lambda own, t: ("GET", f"/v1/events/{t.event}"),
    ("GET", "/v1/audit"): lambda own, t: ("GET", f"/v1/audit?company_id={t.company}"),
    ("GET", "/v1/stream"): lambda own, t: ("GET", f"/v1/stream?company_id={t.company}"),
    ("POST", "/v1/companies/{company_id}/refresh"): lambda own, t: ("POST", f"/v1/companies/{t.company}/refresh"),
    ("POST", "/v1/companies/{company_id}/refresh/{data_type}"): lambda own, t: (
        "POST",
        f"/v1/companies/{t.company}/refresh/invoices",
    ),
    ("GET", "/v1/companies/{company_id}/bundles"): lambda own, t: ("GET", f"/v1/companies/{t.company}/bundles"),
    ("POST", "/v1/companies/{company_id}/bundles/{name}/refresh"): lambda own, t: (
        "POST",
        f"/v1/companies/{t.company}/bundles/ar/refresh",
    ),
    ("POST", "/v1/connections/{connection_id}/unlink"): lambda own, t: (
        "POST",
        f"/v1/connections/{t.connection}/unlink",
    ),
    ("DELETE", "/v1/connections/{connection_id}"): lambda own, t: ("DELETE", f"/v1/connections/{t.connection}"),
    ("POST", "/v1/connections/{connection_id}/reconnect"): lambda own, t: (
        "POST",
        f"/v1/connections/{t.connection}/reconnect",
    ),
}
EXTRA_CASES: dict[str, Request] = {
    "refresh_own_company_naming_a_foreign_connection": lambda own, t: (
        "POST",
        f"/v1/companies/{own.company}/refresh/invoices?connection_id={t.connection}",
    ),
    "stream_filtered_by_several_companies": lambda own, t: ("GET", f"/v1/stream?company_id={own.company},{t.company}"),
}
CROSS_CASES = {f"{m} {p}": request for (m, p), request in COMPANY_ROUTES.items()} | EXTRA_CASES


def all_rights(world: World) -> dict[str, str]:
    return bearer(company_token(world.a.company, RIGHTS))


def same_answer(
    client: TestClient, request: Request, own: Target, foreign: Target, headers: dict[str, str]
) -> tuple[Any, Any]:
    """The answers for `foreign` and for UNKNOWN, with their ids blanked so they can be compared."""

    def blanked(target: Target) -> Any:
        method, url = request(own, target)
        response = client.request(method, url, headers=headers)
        text = response.text
        for ident in (target.company, target.connection, target.event):
            text = text.replace(ident, "<id>")
        return response.status_code, text

    return blanked(foreign), blanked(UNKNOWN)


def test_every_company_rule_is_exercised_by_the_isolation_tests() -> None:
    assert set(COMPANY_ROUTES) == {key for key, rule in RULES.items() if rule.kind == Kind.COMPANY}


@pytest.mark.parametrize("case", sorted(CROSS_CASES))
def test_a_company_token_finds_another_companys_resources_exactly_as_missing_ones(
    case: str, client: TestClient, world: World, fake: FakeCodatServer
) -> None:
    fake.control.clear_requests()
    foreign, unknown = same_answer(client, CROSS_CASES[case], world.a, world.b, all_rights(world))
    assert foreign[0] == 404, foreign
    assert json.loads(foreign[1])["error"] == "not_found"
    assert foreign == unknown
    assert fake.control.requests() == [], "nothing may reach Codat for another company"


@pytest.mark.parametrize("route", sorted(set(COMPANY_ROUTES) - {("GET", "/v1/stream")}))
def test_a_company_token_with_the_routes_right_reaches_its_own_company(
    route: tuple[str, str], client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    """(The stream never ends in an in-process client: tests/security/test_stream_auth.py streams for real.)"""
    rule = rule_for(*route)
    assert rule is not None and rule.right is not None
    own = company_in_both(fake, settings)  # a fresh one: unlink and delete change it
    if rule.right == "reconnect":  # only a connection its customer must re-link can be reconnected
        gone = connection_event("connection.disconnected", company_id=own.company, connection_id=own.connection)
        deliver(settings, {**gone, "generatedDate": iso(datetime.now(UTC))})
    method, url = COMPANY_ROUTES[route](own, own)
    response = client.request(method, url, headers=bearer(company_token(own.company, [rule.right])))
    assert response.status_code in (200, 202), response.text


@pytest.mark.parametrize("route", sorted(COMPANY_ROUTES))
def test_a_company_token_without_the_routes_right_is_forbidden_on_its_own_company(
    route: tuple[str, str], client: TestClient, world: World, fake: FakeCodatServer
) -> None:
    rule = rule_for(*route)
    assert rule is not None and rule.right is not None
    others = [right for right in RIGHTS if right != rule.right]
    method, url = COMPANY_ROUTES[route](world.a, world.a)
    fake.control.clear_requests()
    response = client.request(method, url, headers=bearer(company_token(world.a.company, others)))
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": f"this token does not have the {rule.right!r} right"}
    assert fake.control.requests() == []


@pytest.mark.parametrize("path", ["/v1/events", "/v1/syncs/active", "/v1/audit"])
def test_lists_show_a_company_token_its_own_company_only(path: str, client: TestClient, world: World) -> None:
    for target in (world.a, world.b):  # an audit row for each company
        assert client.post(f"/v1/companies/{target.company}/refresh", headers=ADMIN_HEADERS).status_code == 202
    everything = client.get(path, headers=ADMIN_HEADERS).json()["items"]
    assert {item["company_id"] for item in everything} >= {world.a.company, world.b.company}
    mine = client.get(path, headers=all_rights(world)).json()["items"]
    assert mine and {item["company_id"] for item in mine} == {world.a.company}
    same = client.get(f"{path}?company_id={world.a.company}", headers=all_rights(world)).json()["items"]
    assert same == mine


def test_a_foreign_connection_filter_lists_nothing_as_an_unknown_one_does(client: TestClient, world: World) -> None:
    for connection in (world.b.connection, UNKNOWN.connection):
        response = client.get(f"/v1/syncs/active?connection_id={connection}", headers=all_rights(world))
        assert (response.status_code, response.json()["items"]) == (200, [])


def app_routes() -> list[tuple[str, str]]:
    app = create_app(Settings(database_url="sqlite://", _env_file=None))
    return app_operations(app.routes)


ROUTES = app_routes()


def concrete(path: str) -> str:
    """A request path for a route template (every parameter `x`)."""
    import re

    return re.sub(r"{[^}]+}", "x", path)


def test_every_route_of_the_app_has_an_access_rule_and_every_rule_a_route() -> None:
    assert [route for route in ROUTES if rule_for(route[0], route[1].removesuffix("/{path}")) is None] == []
    declared = {(method, path) for method, path in ROUTES} | {("*", p.removesuffix("/{path}")) for _, p in ROUTES}
    assert [key for key in RULES if key not in declared] == []


PROTECTED = [
    route
    for route in ROUTES
    if (rule := rule_for(route[0], route[1].removesuffix("/{path}"))) and rule.kind in (Kind.ADMIN, Kind.COMPANY)
]
ADMIN_ONLY = [route for route in PROTECTED if rule_for(*route).kind == Kind.ADMIN]  # type: ignore[union-attr]


def test_the_protected_routes_are_the_whole_api() -> None:
    assert {path for _, path in PROTECTED} == {path for _, path in ROUTES if path.startswith("/v1/")}


@pytest.mark.parametrize("route", PROTECTED, ids=" ".join)
def test_every_api_route_refuses_a_request_without_a_token(route: tuple[str, str], client: TestClient) -> None:
    response = client.request(route[0], concrete(route[1]))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ADMIN_ONLY, ids=" ".join)
def test_admin_routes_refuse_company_tokens_and_admit_admin_tokens(
    route: tuple[str, str], client: TestClient, world: World
) -> None:
    refused = client.request(route[0], concrete(route[1]), headers=all_rights(world))
    assert refused.status_code == 403
    assert refused.json() == {"error": "forbidden", "detail": "this route needs an admin token"}
    admitted = client.request(route[0], concrete(route[1]), headers=ADMIN_HEADERS)
    assert admitted.status_code not in (401, 403), admitted.text


def test_an_expired_company_token_is_refused(client: TestClient, world: World) -> None:
    token = company_token(world.a.company, ttl_seconds=60, now=datetime.now(UTC).timestamp() - 61)
    response = client.get(f"/v1/companies/{world.a.company}/connections", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "detail": "the token has expired"}


def test_a_tampered_company_token_is_refused(client: TestClient, world: World) -> None:
    genuine = company_token(world.a.company)
    other = company_token(world.b.company)
    spliced = ".".join([*other.split(".")[:2], genuine.split(".")[2]])
    response = client.get(f"/v1/companies/{world.b.company}/connections", headers=bearer(spliced))
    assert response.status_code == 401
    assert "signature does not match" in response.json()["detail"]


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer  ", "token abc"])
def test_a_malformed_authorization_header_is_refused(header: str, client: TestClient) -> None:
    response = client.get("/v1/companies", headers={"Authorization": header})
    assert response.status_code == 401


def test_unknown_api_paths_need_a_token_before_they_are_found_missing(client: TestClient) -> None:
    assert client.get("/v1/nothing-here").status_code == 401
    assert client.get("/v1/nothing-here", headers=ADMIN_HEADERS).status_code == 404


def test_tokens_are_minted_for_admins_only_with_bounded_lifetimes(client: TestClient, world: World) -> None:
    body = {"company_id": world.a.company, "rights": ["read", "refresh"], "ttl_seconds": 600}
    minted = client.post("/v1/tokens", json=body, headers=ADMIN_HEADERS)
    assert minted.status_code == 201
    assert minted.json()["rights"] == ["read", "refresh"]
    token = minted.json()["token"]
    assert client.get(f"/v1/companies/{world.a.company}/connections", headers=bearer(token)).status_code == 200
    assert client.get(f"/v1/companies/{world.b.company}/connections", headers=bearer(token)).status_code == 404
    assert client.post("/v1/tokens", json=body, headers=bearer(token)).status_code == 403
    too_long = client.post("/v1/tokens", json={**body, "ttl_seconds": 30 * 86400}, headers=ADMIN_HEADERS)
    assert too_long.status_code == 400 and "SYNCTRACK_TOKEN_MAX_TTL" in too_long.json()["detail"]
    bad_right = client.post("/v1/tokens", json={**body, "rights": ["admin"]}, headers=ADMIN_HEADERS)
    assert bad_right.status_code == 400


def test_the_public_routes_answer_without_a_token(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/", "/embed/companies/x", "/static/dashboard.js"):
        assert client.get(path).status_code == 200, path
    webhook = client.post("/webhooks/codat", content=b"{}", headers={"content-type": "application/json"})
    assert webhook.json()["error"] == "missing_signature_headers"


@pytest.mark.parametrize(("required", "expected"), [(False, (200, 200, 200)), (True, (401, 403, 200))])
def test_metrics_need_an_admin_token_only_when_configured(
    required: bool, expected: tuple[int, int, int], settings: Settings, world: World
) -> None:
    with TestClient(create_app(settings.model_copy(update={"metrics_require_token": required}))) as client:
        answers = tuple(
            client.get("/metrics", headers=headers).status_code for headers in ({}, all_rights(world), ADMIN_HEADERS)
        )
    assert answers == expected


def app_with(settings: Settings, **changes: Any) -> Starlette:
    return create_app(settings.model_copy(update=changes))


@pytest.mark.parametrize("enabled", [False, True])
def test_a_token_in_the_query_is_accepted_on_the_stream_only_and_only_when_enabled(
    enabled: bool, settings: Settings, world: World
) -> None:
    token = company_token(world.a.company)
    with TestClient(app_with(settings, stream_token_in_query=enabled)) as client:
        # Another company's stream is refused before it starts: a 404 shows the token was taken as A's.
        stream = client.get(f"/v1/stream?company_id={world.b.company}&access_token={token}")
        elsewhere = client.get(f"/v1/companies/{world.a.company}/connections?access_token={token}")
    assert stream.status_code == (404 if enabled else 401)
    assert elsewhere.status_code == 401
    assert "SYNCTRACK_STREAM_TOKEN_IN_QUERY" in elsewhere.json()["detail"]


def test_the_query_token_is_taken_out_before_any_handler_or_log_sees_it() -> None:
    scope: dict[str, Any] = {"query_string": b"company_id=a&access_token=secret-value&limit=5"}
    assert take_query_token(scope) == "secret-value"
    assert scope["query_string"] == b"company_id=a&limit=5"
    untouched: dict[str, Any] = {"query_string": b"company_id=a"}
    assert take_query_token(untouched) is None and untouched["query_string"] == b"company_id=a"


def test_repeated_failed_authentications_are_rate_limited_but_a_valid_token_never_is(
    settings: Settings, world: World
) -> None:
    with TestClient(app_with(settings, failure_limit_per_minute=3)) as client:
        bad = [client.get("/v1/companies", headers=bearer("sta_wrong-token-0123456789abcdefghijkl")) for _ in range(4)]
        assert [r.status_code for r in bad] == [401, 401, 401, 429]
        assert bad[-1].json()["error"] == "rate_limited"
        assert 1 <= int(bad[-1].headers["retry-after"]) <= 20
        assert client.get("/v1/companies").status_code == 429
        assert client.get("/v1/companies", headers=ADMIN_HEADERS).status_code == 200
    with TestClient(app_with(settings, failure_limit_per_minute=3), client=("192.0.2.7", 4000)) as elsewhere:
        assert elsewhere.get("/v1/companies").status_code == 401, "another source has its own budget"


def test_the_stream_and_the_other_routes_charge_one_failure_budget(settings: Settings, world: World) -> None:
    wrong = bearer("sta_wrong-token-0123456789abcdefghijkl")
    with TestClient(app_with(settings, failure_limit_per_minute=3)) as client:
        first = [client.get("/v1/stream", headers=wrong).status_code for _ in range(2)]
        then = [client.get("/v1/companies", headers=wrong).status_code for _ in range(2)]
        stream_after = client.get("/v1/stream", headers=wrong)
    assert first + then == [401, 401, 401, 429]
    assert stream_after.status_code == 429 and stream_after.json()["error"] == "rate_limited"


def test_forwarded_sources_count_separately_only_behind_a_trusted_proxy(settings: Settings) -> None:
    def statuses(trusted: list[str]) -> list[int]:
        app = app_with(settings, failure_limit_per_minute=1, trusted_proxies=trusted)
        with TestClient(app, client=("127.0.0.1", 4000)) as client:
            return [
                client.get("/v1/companies", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
                for n in (1, 2, 3)
            ]

    assert statuses(["127.0.0.1/32"]) == [401, 401, 401]
    assert statuses([]) == [401, 429, 429], "without a trusted proxy the header is the client's own claim"


def test_cors_answers_preflights_for_configured_origins_and_exposes_errors_to_them(settings: Settings) -> None:
    with TestClient(app_with(settings, cors_origins=["https://app.example"])) as client:
        preflight = client.options(
            "/v1/companies",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        refused = client.get("/v1/companies", headers={"Origin": "https://app.example"})
        stranger = client.get("/v1/companies", headers={"Origin": "https://evil.example", **ADMIN_HEADERS})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in stranger.headers


LOCAL_URL = "http://127.0.0.1:8000"
"""What a local client addresses (with authentication off, only loopback `Host` values are served)."""


def local_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"admin_token_hashes": [], **changes})


def test_with_authentication_off_only_loopback_clients_are_served_without_a_token(settings: Settings) -> None:
    app = create_app(local_settings(settings, auth_disabled=True))
    with TestClient(app, client=("127.0.0.1", 4000), base_url=LOCAL_URL) as local:
        assert local.get("/v1/companies").status_code == 200
        assert local.post("/v1/companies/x/refresh", headers=bearer(company_token("y", ["refresh"]))).status_code == 404
    with TestClient(app, client=("192.0.2.7", 4000), base_url=LOCAL_URL) as remote:
        refused = remote.get("/v1/companies")
    assert refused.status_code == 401 and "loopback clients only" in refused.json()["detail"]


def test_admin_hashes_keep_authentication_on_even_when_asked_to_turn_it_off(settings: Settings) -> None:
    app = app_with(settings, auth_disabled=True)
    with TestClient(app, client=("127.0.0.1", 4000)) as local:
        assert local.get("/v1/companies").status_code == 401


def test_without_admin_hashes_the_api_refuses_everything_but_company_tokens(settings: Settings, world: World) -> None:
    with TestClient(create_app(local_settings(settings)), client=("127.0.0.1", 4000)) as client:
        assert client.get("/v1/companies").status_code == 401
        assert client.get("/v1/companies", headers=ADMIN_HEADERS).status_code == 401
        own = client.get(f"/v1/companies/{world.a.company}/connections", headers=all_rights(world))
        assert own.status_code == 200


def test_the_audit_log_names_who_acted_by_subject_never_by_token(
    client: TestClient, fake: FakeCodatServer, settings: Settings
) -> None:
    own = company_in_both(fake, settings)
    token = company_token(own.company, ["read", "refresh"])
    assert client.post(f"/v1/companies/{own.company}/refresh", headers=bearer(token)).status_code == 202
    assert client.post(f"/v1/companies/{own.company}/refresh", headers=ADMIN_HEADERS).status_code in (202, 409)
    actors = [
        item["actor"]
        for item in client.get(f"/v1/audit?company_id={own.company}", headers=bearer(token)).json()["items"]
    ]
    assert actors[-1].startswith(f"company:{own.company}:") and token not in actors[-1]
    assert actors[0] == f"admin:{ADMIN_TOKEN_HASH.removeprefix('sha256:')[:8]}"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"admin_token_hashes": ["md5:abc"]}, "synctrack token hash"),
        ({"token_signing_key": "short"}, "at least 32"),
        ({"trusted_proxies": ["10.0.0.0/99"]}, "SYNCTRACK_TRUSTED_PROXIES"),
        ({"webhook_allowed_networks": ["nope"]}, "SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS"),
    ],
)
def test_unusable_security_settings_stop_the_app_from_being_built(
    changes: dict[str, Any], message: str, settings: Settings
) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(settings.model_copy(update=changes))
