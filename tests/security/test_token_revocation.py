"""`POST /v1/tokens/{token_id}/revoke`: a revoked company token answers 401 on its next request in every web
process, and the audit log says who revoked it; a stream it opened ends within seconds, in every web process,
as does one whose token expires. Two real `synctrack web` processes share the real Redis; the token is minted
and revoked through one and used against both.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV, bearer, company_token
from tests.support.builders import COMPANY, CONNECTION, SECRET, connection_event, read_completed, signed_request
from tests.support.services import ServiceProcess, free_port, run_db_upgrade, wait_for, wait_until_healthy
from tests.support.sse_client import SseClient

TOKEN_ENDS_WITHIN_SECONDS = 10
"""How long after its token is revoked or expires a stream may still be open."""

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def two_webs(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[tuple[str, str]]:
    env = {
        **AUTH_ENV,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_STREAM_TOKEN_IN_QUERY": "true",
    }
    assert run_db_upgrade(env, tmp_path, 60).returncode == 0
    ports = (free_port(), free_port())
    with ExitStack() as stack:
        for n, port in enumerate(ports):
            web = ServiceProcess(["web", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, f"web-{n}")
            stack.callback(web.stop)
            wait_until_healthy(f"http://127.0.0.1:{port}", web, timeout=90)
        worker = ServiceProcess(["worker", "--processes", "1", "--threads", "2"], env, tmp_path, "worker")
        stack.callback(worker.stop)
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"


def test_a_revoked_token_answers_401_in_every_web_process_and_the_audit_log_names_who_revoked_it(
    two_webs: tuple[str, str], redis_url: str, namespace: str
) -> None:
    first, second = two_webs
    event = connection_event()
    company = event["payload"]["referenceCompany"]["id"]
    body, headers = signed_request(event)
    assert httpx.post(f"{first}/webhooks/codat", content=body, headers=headers).status_code == 202
    minted = httpx.post(f"{first}/v1/tokens", json={"company_id": company, "ttl_seconds": 600}, headers=ADMIN_HEADERS)
    assert minted.status_code == 201, minted.text
    token, token_id = minted.json()["token"], minted.json()["token_id"]
    kept = httpx.post(f"{first}/v1/tokens", json={"company_id": company}, headers=ADMIN_HEADERS).json()["token"]
    for base in (first, second):
        assert httpx.get(f"{base}/v1/events", headers=bearer(token)).status_code == 200

    revoked = httpx.post(f"{first}/v1/tokens/{token_id}/revoke", headers=ADMIN_HEADERS)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["company_id"] == company
    assert revoked.json()["revoked_by"].startswith("admin:")
    for base in (second, first):
        for path in ("/v1/events", f"/v1/companies/{company}/connections", f"/v1/stream?access_token={token}"):
            response = httpx.get(f"{base}{path}", headers={} if "access_token" in path else bearer(token))
            assert response.status_code == 401, (base, path, response.text)
            assert response.json() == {"error": "unauthorized", "detail": "the token has been revoked"}
        assert httpx.get(f"{base}/v1/events", headers=bearer(kept)).status_code == 200, "other tokens still work"

    audit = wait_for(
        lambda: [r for r in httpx.get(f"{second}/v1/audit?action=revoke_token", headers=ADMIN_HEADERS).json()["items"]],
        timeout=10,
        message="the revocation in the audit log",
    )
    (record,) = audit
    assert record["actor"] == revoked.json()["revoked_by"]
    assert record["company_id"] == company and token_id in record["detail"]

    # Kept in Redis until the token expires (600 s), not for ever and not shorter.
    ttl = redis.Redis.from_url(redis_url).ttl(f"{namespace}:revoked-token:{token_id}")
    assert 590 <= ttl <= 600
    assert revoked.json()["kept_until"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 601))


def test_only_admins_revoke_and_a_malformed_id_is_a_400(two_webs: tuple[str, str]) -> None:
    first, _ = two_webs
    token = httpx.post(f"{first}/v1/tokens", json={"company_id": "c-1"}, headers=ADMIN_HEADERS).json()
    own = httpx.post(f"{first}/v1/tokens/{token['token_id']}/revoke", headers=bearer(token["token"]))
    assert own.status_code == 403
    assert httpx.post(f"{first}/v1/tokens/%20x/revoke", headers=ADMIN_HEADERS).status_code == 400


def open_stream(base: str, token: str) -> socket.socket:
    """A stream opened with `token` over HTTP/1.1 (a connection the server would keep alive), read up to its
    snapshot."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    opening = b""
    while b"event: snapshot" not in opening:
        chunk = sock.recv(1 << 16)
        assert chunk, f"the stream closed before its snapshot: {opening!r}"
        opening += chunk
    assert opening.startswith(b"HTTP/1.1 200"), opening
    return sock


def rest_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it (monotonic)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(1 << 16):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the connection stayed open for {timeout} s; it sent {received!r}") from None
    finally:
        sock.close()
    return received, time.monotonic()


def events_in(raw: bytes) -> list[str]:
    return [line.removeprefix(b"event: ").decode() for line in raw.split(b"\n") if line.startswith(b"event: ")]


def test_a_stream_ends_with_a_reset_within_seconds_of_its_tokens_revocation_in_every_web_process(
    two_webs: tuple[str, str],
) -> None:
    first, second = two_webs
    company = COMPANY
    body, headers = signed_request(connection_event(company_id=company, connection_id=CONNECTION))
    assert httpx.post(f"{first}/webhooks/codat", content=body, headers=headers).status_code == 202
    folded = f"{first}/v1/connections/{CONNECTION}"
    wait_for(lambda: httpx.get(folded, headers=ADMIN_HEADERS).status_code == 200, message="the connection folded")
    time.sleep(0.5)  # its changes are on the feed before the streams open: none flows from here on
    minted = httpx.post(f"{first}/v1/tokens", json={"company_id": company}, headers=ADMIN_HEADERS).json()
    other = httpx.post(f"{first}/v1/tokens", json={"company_id": company}, headers=ADMIN_HEADERS).json()["token"]
    revoked_streams = [open_stream(first, minted["token"]), open_stream(second, minted["token"])]
    with (
        SseClient(f"{second}/v1/stream", ADMIN_HEADERS) as admin,
        SseClient(f"{second}/v1/stream", bearer(other)) as kept,
    ):
        assert admin.next().event == kept.next().event == "snapshot"

        revoked_at = time.monotonic()
        assert httpx.post(f"{first}/v1/tokens/{minted['token_id']}/revoke", headers=ADMIN_HEADERS).status_code == 200

        for sock in revoked_streams:  # no change flows meanwhile: the stream ends by itself
            rest, closed_at = rest_until_closed(sock, TOKEN_ENDS_WITHIN_SECONDS)
            assert closed_at - revoked_at < TOKEN_ENDS_WITHIN_SECONDS
            assert events_in(rest) == ["reset"], rest
            assert b'"reason":"token_revoked"' in rest
            assert rest.endswith(b"0\r\n\r\n"), "the body is ended before the connection closes"

        # The admin's stream and the other token's go on, and get the next change.
        done, done_headers = signed_request(
            read_completed([("invoices", "Complete")], company_id=company, connection_id=CONNECTION)
        )
        assert httpx.post(f"{second}/webhooks/codat", content=done, headers=done_headers).status_code == 202
        for client in (admin, kept):
            change = client.next(timeout=20)
            while change.event == "connection.freshness_changed":
                change = client.next(timeout=20)
            assert change.event in ("sync.completed", "connection.updated"), change
            assert not client.ended


def test_a_stream_ends_with_a_reset_within_seconds_of_its_token_expiring(two_webs: tuple[str, str]) -> None:
    _, second = two_webs
    ttl = 4
    token = company_token("company-expiring", ttl_seconds=ttl)
    expires_at = time.monotonic() + ttl - 1  # the token's expiry is whole seconds, at most one earlier
    stream = open_stream(second, token)
    with SseClient(f"{second}/v1/stream", bearer(company_token("company-expiring", ttl_seconds=600))) as kept:
        assert kept.next().event == "snapshot"

        rest, closed_at = rest_until_closed(stream, ttl + TOKEN_ENDS_WITHIN_SECONDS)

        assert closed_at - expires_at < TOKEN_ENDS_WITHIN_SECONDS
        assert events_in(rest) == ["reset"], rest
        assert b'"reason":"token_expired"' in rest
        time.sleep(1)
        assert not kept.ended, "a token still valid keeps its stream"
