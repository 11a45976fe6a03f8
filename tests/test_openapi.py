"""`/openapi.json`: every route is in it, and schemathesis fuzzes the whole API against it.

The fuzzing runs in process against the real app (embedded Redis, SQLite, the fake Codat on a local
port), authenticated as an admin, with a bounded number of examples per operation: no answer may be a
5xx and every answer must match the document. Excluded: the stream (it never ends) and the two routes
that send outbound webhooks (a ping or a retry would reach whatever URL was generated).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.python import asgi
from starlette.testclient import TestClient

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from schemas.settings import Settings
from service.app import create_app
from service.api_docs import OPERATIONS
from service.openapi import app_operations
from tests.auth import ADMIN_HEADERS, AUTH_SETTINGS
from tests.builders import SECRET, connection_event, read_completed
from workers.db import make_engine, upgrade
from workers.ingest import handle_webhook

KEY = "test-codat-key-openapi"
EXAMPLES_PER_OPERATION = 12
NOT_FUZZED = (
    ("GET", "/v1/stream"),
    ("POST", "/v1/subscriptions/{subscription_id}/test"),
    ("POST", "/v1/subscriptions/{subscription_id}/deliveries/{delivery_id}/retry"),
)


def api_settings(folder: Path, codat_url: str) -> Settings:
    import fakeredis

    import workers.broker as broker

    broker._embedded_server = fakeredis.FakeServer()
    return Settings(
        embedded=True,
        database_url=f"sqlite:///{folder / 'ledger.db'}",
        webhook_secrets=[SECRET],
        redis_namespace=f"t{uuid.uuid4().hex[:8]}",
        codat_base_url=codat_url,
        codat_api_key=KEY,
        codat_max_retries=0,
        _env_file=None,  # type: ignore[call-arg]
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
    detail = document["paths"]["/v1/connections/{connection_id}"]["get"]
    assert detail["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert detail["security"] == [{"bearer": []}]


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

    import workers.outbound_url

    monkeypatch_module.setattr(workers.outbound_url, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
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


def seed(fake: FakeCodatServer, settings_: Settings) -> None:
    """A company Codat and the ledger both know, so generated ids sometimes hit something real."""
    company = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)[0]
    ids = {"company_id": company["id"], "connection_id": company["connections"][0]["id"]}
    engine = make_engine(settings_.database_url)
    for body in (connection_event(**ids), read_completed([("invoices", "Fetching")], **ids)):
        handle_webhook(engine, None, f"msg_{uuid.uuid4().hex}", json.dumps(body), "2026-11-25T10:00:00+00:00")
    engine.dispose()


FUZZED = sorted(key for key in OPERATIONS if key not in NOT_FUZZED)


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=[f"{m} {p}" for m, p in FUZZED])
def test_the_api_never_fails_and_always_answers_as_documented(method: str, path: str, api_schema: Any) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: Any) -> None:
        case.call_and_validate(headers=ADMIN_HEADERS)

    call()
