"""Security end to end, over real processes: `synctrack web` + `synctrack worker` on the real Redis, the
fake Codat sending signed webhooks and answering actions.

* A realistic session (an admin mints a company token, the browser streams with it in the query and
  refreshes, webhooks flow, attackers knock) leaves none of the secrets in any log line, at DEBUG.
* The receiver under abuse on a real socket: huge headers, a trickled body, huge bodies — each a clear
  4xx, never a 5xx, and the process's memory stays put.
* How `synctrack dev` and `synctrack web` decide whether to serve without tokens.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fakecodat.server import FakeCodatServer
from fakecodat.world import Config
from tests.support.auth import ADMIN_HEADERS, ADMIN_TOKEN, AUTH_ENV, SIGNING_KEY, bearer
from tests.support.builders import OTHER_SECRET, SECRET, connection_event, signed_request
from tests.support.services import (
    ROOT,
    ServiceProcess,
    free_port,
    run_db_upgrade,
    start_web_and_worker,
    wait_for,
    wait_until_healthy,
)
from tests.support.sse_client import SseClient

pytestmark = pytest.mark.e2e

CODAT_KEY = f"codat-key-{uuid.uuid4().hex}"
BODY_TIMEOUT_SECONDS = 2


@dataclass
class Deployment:
    base: str
    fake: FakeCodatServer
    web: ServiceProcess
    worker: ServiceProcess


@pytest.fixture
def deployment(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Deployment]:
    port = free_port()
    env = {
        **AUTH_ENV,
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_WEBHOOK_SECRETS": SECRET,
        "SYNCTRACK_CODAT_API_KEY": CODAT_KEY,
        "SYNCTRACK_STREAM_TOKEN_IN_QUERY": "true",
        "SYNCTRACK_WEBHOOK_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
        "SYNCTRACK_LOG_LEVEL": "DEBUG",
    }
    base = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        fake = stack.enter_context(
            FakeCodatServer(
                receiver_url=f"{base}/webhooks/codat", secret=SECRET, config=Config(sync_seconds=1, api_key=CODAT_KEY)
            )
        )
        env["SYNCTRACK_CODAT_BASE_URL"] = fake.url
        upgraded = run_db_upgrade(env, tmp_path, timeout=120)
        assert upgraded.returncode == 0, upgraded.stderr
        web, worker = start_web_and_worker(stack, env, tmp_path, port, processes=1, threads=2)
        yield Deployment(base, fake, web, worker)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raw_request(base: str, head: bytes, body_parts: Sequence[bytes] = (), pause: float = 0.0) -> bytes:
    """Send a request exactly as given (pausing before each body part); the start of the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                time.sleep(pause)
                sock.sendall(part)
        except OSError:
            pass  # the server may answer and close before the client is done
        answer = b""
        while len(answer) < 2000 and b"}" not in answer:
            chunk = sock.recv(2000)
            if not chunk:
                break
            answer += chunk
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.redis
def test_a_session_with_tokens_webhooks_and_attacks_leaves_no_secret_in_any_log(deployment: Deployment) -> None:
    fake, base = deployment.fake, deployment.base
    with httpx.Client(base_url=base, timeout=20) as client:
        mine, theirs = fake.control.seed(companies=[{"platforms": ["xero"]}, {"platforms": ["hsbc"]}])
        minted = client.post(
            "/v1/tokens",
            json={"company_id": mine["id"], "rights": ["read", "refresh"], "ttl_seconds": 900},
            headers=ADMIN_HEADERS,
        )
        assert minted.status_code == 201, minted.text
        token = minted.json()["token"]
        wait_for(
            lambda: client.get(f"/v1/companies/{mine['id']}/connections", headers=bearer(token)).json().get("items"),
            timeout=30,
            message="the company's webhooks folded",
        )
        with SseClient(f"{base}/v1/stream?access_token={token}") as stream:
            assert stream.status == 200 and stream.next().event == "snapshot"
            refreshed = client.post(f"/v1/companies/{mine['id']}/refresh", headers=bearer(token))
            assert refreshed.status_code == 202, refreshed.text
            denied = client.post(f"/v1/companies/{theirs['id']}/refresh", headers=bearer(token))
            assert denied.status_code == 404
            # Attackers: forged tokens, a token in the query where it is not accepted, forged webhooks.
            assert client.get("/v1/companies", headers=bearer(token[:-4] + "AAAA")).status_code == 401
            assert client.get(f"/v1/events?access_token={ADMIN_TOKEN}").status_code == 401
            body, headers = signed_request(connection_event(), secret=OTHER_SECRET)
            assert client.post("/webhooks/codat", content=body, headers=headers).status_code == 401
            completed = wait_for(
                lambda: [e for e in stream.drain(0.3) if e.event == "sync.completed"], timeout=60, message="sync done"
            )
        assert {event.json()["company_id"] for event in completed} == {mine["id"]}
        assert client.get("/v1/audit", headers=ADMIN_HEADERS).json()["items"], "the refresh was recorded"
    deployment.web.stop()
    deployment.worker.stop()
    logs = deployment.web.output() + deployment.worker.output()
    assert "action=refresh" in logs and "msg=token_minted" in logs, "the logs were captured"
    secrets = {
        "webhook secret": SECRET,
        "webhook secret key": SECRET.removeprefix("whsec_"),
        "Codat API key": CODAT_KEY,
        "Codat API key, base64": base64.b64encode(CODAT_KEY.encode()).decode(),
        "admin token": ADMIN_TOKEN,
        "signing key": SIGNING_KEY,
        "company token": token,
        "company token signature": token.rsplit(".", 1)[1],
    }
    leaked = [name for name, value in secrets.items() if value in logs]
    assert leaked == []


@pytest.mark.redis
def test_the_receiver_answers_abuse_on_a_real_socket_with_a_4xx_and_keeps_its_memory(deployment: Deployment) -> None:
    base, pid = deployment.base, deployment.web.proc.pid
    body, headers = signed_request(connection_event())
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    post = f"POST /webhooks/codat HTTP/1.1\r\nHost: x\r\n{head}"
    before = rss_kib(pid)
    answers = []
    for _ in range(10):
        huge_header = (post + "X-Padding: " + "a" * 1_000_000 + "\r\n").encode()
        answers.append(raw_request(base, huge_header + f"Content-Length: {len(body)}\r\n\r\n".encode() + body))
        many = (post + "".join(f"X-H{i}: v\r\n" for i in range(5000))).encode()
        answers.append(raw_request(base, many + f"Content-Length: {len(body)}\r\n\r\n".encode() + body))
        chunked = (post + "Transfer-Encoding: chunked\r\n\r\n").encode()
        chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"a" * 256 * 1024)
        answers.append(raw_request(base, chunked, [chunk] * 20 + [b"0\r\n\r\n"]))
    statuses = [status_of(answer) for answer in answers]
    assert set(statuses[0::3]) == {431} and set(statuses[1::3]) == {431}
    assert set(statuses[2::3]) == {413}
    started = time.monotonic()
    trickled = raw_request(
        base,
        (post + f"Content-Length: {len(body)}\r\n\r\n").encode(),
        [body[:10], body[10:20], body[20:]],
        pause=BODY_TIMEOUT_SECONDS * 0.75,
    )
    assert status_of(trickled) == 408 and b"request_timeout" in trickled
    assert time.monotonic() - started < BODY_TIMEOUT_SECONDS * 3
    assert rss_kib(pid) - before < 64 * 1024, "memory grew by more than 64 MiB"
    with httpx.Client(base_url=base) as client:
        assert client.get("/healthz").status_code == 200
        fresh_body, fresh_headers = signed_request(connection_event())
        assert client.post("/webhooks/codat", content=fresh_body, headers=fresh_headers).status_code == 202
    assert "Traceback" not in deployment.web.output()


def test_dev_on_localhost_says_loudly_that_authentication_is_off(tmp_path: Path) -> None:
    port = free_port()
    env = {"SYNCTRACK_WEBHOOK_SECRETS": SECRET, "SYNCTRACK_ADMIN_TOKEN_HASHES": ""}
    dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, dev)
        assert "AUTHENTICATION IS OFF" in dev.output()
        assert httpx.get(f"{base}/v1/companies").status_code == 200
    finally:
        dev.stop()


def test_dev_bound_beyond_localhost_keeps_authentication_on(tmp_path: Path) -> None:
    port = free_port()
    env = {"SYNCTRACK_WEBHOOK_SECRETS": SECRET, "SYNCTRACK_ADMIN_TOKEN_HASHES": ""}
    dev = ServiceProcess(["dev", "--host", "0.0.0.0", "--port", str(port)], env, tmp_path, "dev")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, dev)
        assert "refuses every request" in dev.output() and "AUTHENTICATION IS OFF" not in dev.output()
        assert httpx.get(f"{base}/v1/companies").status_code == 401
    finally:
        dev.stop()


def test_web_refuses_to_start_without_authentication_on_a_public_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "web", "--host", "0.0.0.0", "--port", str(free_port())],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SYNCTRACK_AUTH_DISABLED": "true"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "loopback address only" in done.stderr
