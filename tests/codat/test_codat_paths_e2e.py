"""Ids in Codat's paths, on a real `synctrack dev` and the fake Codat: an id outside the id syntax — one with
`/` in it, say — never reaches Codat, whether an admin names it, Codat lists it or a webhook put it in the
ledger; it is refused with 400 at the API, or fails its company in an import job."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from tests.support.builders import connection_event, signed_headers
from tests.support.services import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

PROBE = "probe/data/history/x"

Stack = tuple[httpx.Client, FakeCodatServer, dict[str, str]]


def codat_saw(fake: FakeCodatServer, fragment: str) -> list[dict[str, Any]]:
    return [r for r in fake.control.requests() if fragment in r["path"]]


def test_an_import_naming_an_id_with_a_slash_is_a_400_and_codat_is_not_called(dev_and_fake: Stack) -> None:
    api, fake, _ = dev_and_fake
    fake.control.clear_requests()
    for ident in (PROBE, "../companies", "a b", ""):
        refused = api.post("/v1/admin/imports", json={"company_id": [ident]})
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_parameter"), ident
        assert "company id" in refused.json()["detail"]
    assert api.get("/v1/admin/imports").json()["items"] == []
    time.sleep(0.5)
    assert fake.control.requests() == []


def test_a_company_codat_lists_with_an_id_outside_the_syntax_fails_alone_in_the_import(dev_and_fake: Stack) -> None:
    api, fake, _ = dev_and_fake
    fake.control.seed(companies=[{"id": "probe/x", "platforms": ["xero"]}], announce=False, initial_read=False)
    (healthy,) = fake.control.seed(companies=[{"platforms": ["xero"]}], announce=False, initial_read=False)
    fake.control.clear_requests()

    job = api.post("/v1/admin/imports", json={}).json()
    done = wait_for(
        lambda: (lambda shown: shown if shown["status"] == "completed" else None)(
            api.get(f"/v1/admin/imports/{job['id']}").json()
        ),
        message="the import completed",
    )
    assert (done["total"], done["done"], done["failed"]) == (2, 1, 1)
    (failure,) = done["errors"]
    assert failure["company_id"] == "probe/x"
    assert failure["error"].startswith("invalid_parameter: company id 'probe/x' is not a Codat id")
    assert codat_saw(fake, "probe") == []
    assert [c["id"] for c in api.get("/v1/companies").json()["items"]] == [healthy["id"]]


def test_an_action_on_a_connection_whose_company_id_has_a_slash_is_refused_before_codat(dev_and_fake: Stack) -> None:
    api, fake, _ = dev_and_fake
    body = json.dumps(connection_event(company_id="acme/data/all", connection_id="conn-of-acme")).encode()
    assert api.post("/webhooks/codat", content=body, headers=signed_headers(body)).status_code == 202
    wait_for(lambda: api.get("/v1/connections/conn-of-acme").status_code == 200, message="the connection folded")
    fake.control.clear_requests()

    for method, path in (("POST", "/v1/connections/conn-of-acme/unlink"), ("DELETE", "/v1/connections/conn-of-acme")):
        refused = api.request(method, path)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_parameter"), path
    audit = api.get("/v1/audit", params={"connection_id": "conn-of-acme"}).json()["items"]
    assert [(a["action"], a["result"]) for a in audit] == [("delete", "failed"), ("unlink", "failed")]
    assert codat_saw(fake, "acme") == []
    assert api.get("/v1/connections/conn-of-acme").json()["status"] == "Linked"
