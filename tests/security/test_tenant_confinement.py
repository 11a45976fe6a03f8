"""A company token reads its one company, whatever id it was asked to be minted for or a query names.

The attack: a backend passes a user-supplied company id into `POST /v1/tokens`; the id `" "`, `","` or
`"A,B"` must not become a token that lists every company (or two). And a token signed before ids had
one syntax must be refused although its signature is good.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.security.tokens import SCOPED_PREFIX, TokenSigner
from tests.support.auth import ADMIN_HEADERS, SIGNING_KEY, bearer, company_token
from tests.support.builders import connection_event, read_completed
from tests.support.ledger_fill import fold_webhooks
from workers.runtime.db import make_engine, upgrade

LISTS = ["/v1/events", "/v1/syncs/active", "/v1/audit"]
"""What a company token lists; the stream is checked beside them (it answers before streaming when refused)."""
BAD_IDS = [" ", ",", "", "a b", "x\x00y", "../x", "-leading-dash", "a" * 129, "é", "a\n"]


@pytest.fixture
def companies(embedded_settings: Settings) -> tuple[str, str]:
    """Two companies, each with a connection and a sync running, stored as webhooks."""
    upgrade(embedded_settings.database_url)
    engine = make_engine(embedded_settings.database_url)
    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    for company in ids:
        connection = str(uuid.uuid4())
        fold_webhooks(
            engine,
            connection_event(company_id=company, connection_id=connection),
            read_completed([("invoices", "Fetching")], company_id=company, connection_id=connection),
        )
    engine.dispose()
    return ids


@pytest.fixture
def client(embedded_settings: Settings, companies: tuple[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(embedded_settings)) as test_client:
        yield test_client


def forged(company_id: str) -> str:
    """A token genuinely signed with the signing key, whose company claim is `company_id` as given."""
    claims = {"cid": company_id, "r": ["read"], "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "0" * 16}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{SCOPED_PREFIX}{body}.{TokenSigner(SIGNING_KEY)._sign(body)}"


@pytest.mark.parametrize("company_id", [*BAD_IDS, "{a},{b}"])
def test_no_token_is_minted_for_an_id_that_is_not_one_valid_company_id(
    company_id: str, client: TestClient, companies: tuple[str, str]
) -> None:
    company_id = company_id.format(a=companies[0], b=companies[1])
    response = client.post("/v1/tokens", json={"company_id": company_id}, headers=ADMIN_HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_parameter"
    assert "company_id" in response.json()["detail"]


@pytest.mark.parametrize(
    "company_id", ["8a210b68-6988-11ed-a1eb-0242ac120002", "company-1", "co-9", "conn.a_b", "A" * 128]
)
def test_every_real_codat_id_and_readable_id_can_be_minted_for(company_id: str, client: TestClient) -> None:
    response = client.post("/v1/tokens", json={"company_id": company_id}, headers=ADMIN_HEADERS)
    assert response.status_code == 201, response.text
    assert response.json()["company_id"] == company_id


@pytest.mark.parametrize("company_id", [" ", ",", "{a},{b}", "{a},", " {a}"])
def test_a_genuinely_signed_token_naming_no_valid_company_is_refused_everywhere(
    company_id: str, client: TestClient, companies: tuple[str, str]
) -> None:
    token = forged(company_id.format(a=companies[0], b=companies[1]))
    for path in [*LISTS, "/v1/stream", f"/v1/companies/{companies[0]}/connections"]:
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"error": "unauthorized", "detail": "the token does not name one valid company"}


@pytest.mark.parametrize("named", [" ", ",", "{a},{b}", "{a},", ",{a}", " {a}", "{b}"])
def test_a_company_filter_that_is_not_exactly_the_tokens_company_is_a_404(
    named: str, client: TestClient, companies: tuple[str, str]
) -> None:
    own, other = companies
    token = company_token(own)
    value = named.format(a=own, b=other)
    for path in [*LISTS, "/v1/stream"]:
        response = client.get(path, params={"company_id": value}, headers=bearer(token))
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("path", LISTS)
def test_a_company_token_lists_its_own_company_and_nothing_else(
    path: str, client: TestClient, companies: tuple[str, str]
) -> None:
    own, other = companies
    everything = client.get(path, headers=ADMIN_HEADERS).json()["items"]
    mine = client.get(path, headers=bearer(company_token(own))).json()["items"]
    assert {item["company_id"] for item in mine} <= {own}
    assert {item["company_id"] for item in everything} - {item["company_id"] for item in mine} <= {other}
    if path != "/v1/audit":  # no action ran, so the audit log is empty
        assert {item["company_id"] for item in mine} == {own}
