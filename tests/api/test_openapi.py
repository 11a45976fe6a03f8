"""`/openapi.json`: every route is in it, and schemathesis fuzzes the whole API against it.

The fuzzing runs in process against the real app (embedded Redis, SQLite, the fake Codat on a local
port), authenticated as an admin, with a bounded number of examples per operation: no answer may be a
5xx and every answer must match the document. Excluded: the stream (it never ends) and the two routes
that send outbound webhooks (a ping or a retry would reach whatever URL was generated).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.api.docs import OPERATIONS
from service.api.openapi import app_operations
from service.app import create_app
from service.security.rules import Kind, rule_for
from service.security.tokens import RIGHTS
from tests.support.auth import ADMIN_HEADERS, AUTH_SETTINGS, bearer, company_token
from tests.support.builders import SECRET, connection_event, read_completed
from tests.support.ledger_fill import fold_webhooks
from workers.runtime.db import make_engine, upgrade

RECEIVED = "2026-11-25T10:00:00+00:00"

KEY = "test-codat-key-openapi"
EXAMPLES_PER_OPERATION = 25
NOT_FUZZED = (
    ("GET", "/v1/stream"),
    ("POST", "/v1/subscriptions/{subscription_id}/test"),
    ("POST", "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry"),
)


def api_settings(folder: Path, codat_url: str) -> Settings:
    import fakeredis

    import workers.runtime.broker as broker

    broker._embedded_server = fakeredis.FakeServer()
    return Settings(
        embedded=True,
        database_url=f"sqlite:///{folder / 'ledger.db'}",
        webhook_secrets=[SECRET],
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        codat_base_url=codat_url,
        codat_api_key=KEY,
        codat_max_retries=0,
        failure_limit_per_minute=0,  # the fuzzer fails authentication on purpose, and often
        _env_file=None,
        **AUTH_SETTINGS,  # type: ignore[arg-type]
    )


def test_every_route_of_the_app_is_in_the_document(tmp_path: Path) -> None:
    app = create_app(api_settings(tmp_path, "http://127.0.0.1:9"))
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "x-undocumented" not in document
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert set(app_operations(app.routes)) == listed


def test_every_body_schema_is_a_component_generated_from_the_handlers_models(tmp_path: Path) -> None:
    with TestClient(create_app(api_settings(tmp_path, "http://127.0.0.1:9"))) as client:
        document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    assert {"ConnectionDetail", "SyncOut", "ActionOut", "TokenIn", "TokenOut", "ErrorBody"} <= set(components)
    refs = [ref for ref in _refs(document["paths"])]
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs)
    data_type = components["DataTypeOut"]
    assert {"threshold_seconds", "threshold_source"} <= set(data_type["required"])
    sources = data_type["properties"]["threshold_source"]["enum"]
    assert sources == ["override", "company_schedule", "client_schedule", "default"]
    detail = document["paths"]["/v1/connections/{connection_id}"]["get"]
    assert detail["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert detail["security"] == [{"bearer": []}]


def test_the_sync_object_documents_whether_codat_is_still_running_it(tmp_path: Path) -> None:
    with TestClient(create_app(api_settings(tmp_path, "http://127.0.0.1:9"))) as client:
        sync = client.get("/openapi.json").json()["components"]["schemas"]["SyncOut"]
    delayed, codat_status = sync["properties"]["delayed"], sync["properties"]["codat_status"]
    assert (delayed["type"], delayed["default"]) == ("boolean", False)
    assert codat_status["default"] is None and "Queued" in codat_status["description"]
    assert "still running" in delayed["description"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Any]:
    # Subscription URLs resolve to loopback here, so every one is refused before anything is sent.
    import ipaddress

    import workers.outbound.url_policy

    monkeypatch_module.setattr(
        workers.outbound.url_policy, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")]
    )
    with FakeCodatServer(config=Config(sync_seconds=30, api_key=KEY)) as fake:
        folder = tmp_path_factory.mktemp("openapi")
        settings_ = api_settings(folder, fake.url)
        upgrade(settings_.database_url)
        seed(fake, settings_)
        app = create_app(settings_)
        try:
            yield schemathesis.openapi.from_asgi("/openapi.json", app)
        finally:
            asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


SEEDED_COMPANY: list[str] = []


def seed(fake: FakeCodatServer, settings_: Settings) -> None:
    """A company Codat and the ledger both know, so generated ids sometimes hit something real."""
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    SEEDED_COMPANY[:] = [company["id"]]
    ids = {"company_id": company["id"], "connection_id": company["connections"][0]["id"]}
    engine = make_engine(settings_.database_url)
    fold_webhooks(
        engine, connection_event(**ids), read_completed([("invoices", "Fetching")], **ids), received_at=RECEIVED
    )
    engine.dispose()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
"""No 5xx, every answer as documented, no route that forgets its token. (Not `positive_data_acceptance`:
an opaque cursor or a business rule cannot be told in a schema, so schema-valid input may be refused.)"""
FUZZED = sorted(key for key in OPERATIONS if key not in NOT_FUZZED)


COMPANY_FUZZED = [key for key in FUZZED if (rule := rule_for(*key)) is not None and rule.kind == Kind.COMPANY]


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_the_api_never_fails_and_always_answers_as_documented(method: str, path: str, api_schema: Any) -> None:
    fuzz(api_schema[path][method], ADMIN_HEADERS, EXAMPLES_PER_OPERATION)


@pytest.mark.parametrize(("method", "path"), COMPANY_FUZZED, ids=[f"{m} {p}" for m, p in COMPANY_FUZZED])
def test_company_tokens_meet_the_same_contract(method: str, path: str, api_schema: Any) -> None:
    """The middleware's company checks (and the query it rewrites) under generated input."""
    token = company_token(SEEDED_COMPANY[0], RIGHTS)
    fuzz(api_schema[path][method], bearer(token), EXAMPLES_PER_OPERATION // 2)


def fuzz(operation: Any, headers: dict[str, str], examples: int) -> None:

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()


def test_an_id_from_a_url_stays_one_segment_of_the_request_to_codat() -> None:
    """Found by the fuzzing: a company id with a control character made the Codat client fail (500),
    and one with `?` or `..` could have steered the request to another Codat path."""
    from workers.codat.client import path_of

    assert path_of(("companies", "\x1f", "data", "all")) == "/companies/%1F/data/all"
    assert path_of(("companies", "a?b#c", "data", "all")) == "/companies/a%3Fb%23c/data/all"
    assert path_of(("companies", "..", "data", "all")) == "/companies/%2E%2E/data/all"
    assert path_of(("companies", "probe/data/history/x")) == "/companies/probe%2Fdata%2Fhistory%2Fx"
    assert path_of(("companies", "8a21-0b68", "connections")) == "/companies/8a21-0b68/connections"


def test_metrics_are_served_while_another_process_is_creating_its_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the fuzzing: a scrape that met a process's metrics file still empty (it is, for an
    instant, when the process starts) answered 500."""
    from service.api.metrics_endpoint import render

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_1.db").write_bytes(b"")  # pid 1 is alive, so the file is not swept away
    assert b"synctrack_redis_up 0.0" in render(None)
