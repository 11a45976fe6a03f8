"""DNS rebinding against outbound deliveries, over the API: the attacker's name answers a public address
when Synctrack checks it and an internal one when Synctrack would connect.

The attacker's DNS is played by a resolver patched into this process (a name with TTL 0 whose answers
the test scripts). The internal service is a real listening socket on 127.0.0.1 that counts every
connection it accepts; the "public" address is one the patched socket layer refuses.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from tests.support.auth import ADMIN_HEADERS
from tests.support.webhook_receiver import WebhookReceiver
from workers.runtime.db import upgrade

ATTACKER = "hooks.rebind.example"
PUBLIC = "93.184.215.14"
"""A public address: the check approves it; connecting to it is refused by the patched socket layer."""


class Listener:
    """An internal service: a TCP socket on 127.0.0.1 counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def internal() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


Answers = Callable[[list[str]], None]


@pytest.fixture
def attacker_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Answers, list[Any]]]:
    """answer(addresses...): the next lookups of ATTACKER answer these, one per lookup, the last repeating.

    Also yields every address a TCP connection was opened to; connecting to PUBLIC is refused.
    """
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    script: list[str] = []
    connected: list[Any] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == ATTACKER:
            address = script.pop(0) if len(script) > 1 else script[0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(111, "Connection refused")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield (lambda addresses: script.__setitem__(slice(None), addresses)), connected


def app_client(embedded_settings: Settings, **changes: Any) -> TestClient:
    upgrade(embedded_settings.database_url)
    return TestClient(create_app(embedded_settings.model_copy(update=changes)), headers=ADMIN_HEADERS)


def test_a_name_rebound_to_an_internal_address_after_the_check_is_never_connected_to(
    embedded_settings: Settings, internal: Listener, attacker_dns: tuple[Answers, list[Any]]
) -> None:
    answer, connected = attacker_dns
    # The check at creation, and the check before the attempt, see a public address; any later lookup
    # (the one a client resolving the name again to connect would make) sees the internal service.
    answer([PUBLIC, PUBLIC, "127.0.0.1"])
    with app_client(embedded_settings) as client:
        created = client.post("/v1/subscriptions", json={"url": f"https://{ATTACKER}:{internal.port}/x"})
        assert created.status_code == 201, created.text
        ping = client.post(f"/v1/subscriptions/{created.json()['id']}/test")
    assert ping.status_code == 200, ping.text
    assert internal.accepted == 0, "the internal service was reached"
    assert [address[0] for address in connected] == [PUBLIC], "only the checked address is connected to"
    assert ping.json()["last_error"] == "connection failed"
    assert ping.json()["last_response_code"] is None


def test_every_attempt_connects_to_the_address_its_own_check_approved(
    embedded_settings: Settings, internal: Listener, attacker_dns: tuple[Answers, list[Any]]
) -> None:
    answer, connected = attacker_dns
    answer([PUBLIC])
    with app_client(embedded_settings) as client:
        created = client.post("/v1/subscriptions", json={"url": f"https://{ATTACKER}:{internal.port}/x"}).json()
        first = client.post(f"/v1/subscriptions/{created['id']}/test").json()
        answer(["127.0.0.1"])  # re-pointed now: the next attempt's own check refuses it
        second = client.post(f"/v1/subscriptions/{created['id']}/test").json()
    assert first["last_error"] == "connection failed"
    assert "not a public address" in second["last_error"]
    assert internal.accepted == 0
    assert [address[0] for address in connected] == [PUBLIC]


def test_the_pinned_connection_keeps_the_urls_name_in_the_host_header(
    embedded_settings: Settings, attacker_dns: tuple[Answers, list[Any]], tmp_path: Path
) -> None:
    answer, connected = attacker_dns
    with WebhookReceiver() as receiver:
        receiver.expect("/hook", [])
        answer(["127.0.0.1", "127.0.0.1", "10.255.255.1"])  # a second lookup to connect would go nowhere
        with app_client(embedded_settings, subscriptions_allow_http=True, subscriptions_allow_private=True) as client:
            url = f"http://{ATTACKER}:{receiver.port}/hook"
            created = client.post("/v1/subscriptions", json={"url": url}).json()
            ping = client.post(f"/v1/subscriptions/{created['id']}/test").json()
        assert ping["last_response_code"] == 204, ping
        (request,) = receiver.at("/hook")
    assert request.headers["host"] == f"{ATTACKER}:{receiver.port}"
    assert [address[0] for address in connected] == ["127.0.0.1"]


@pytest.mark.parametrize("problem", ["closed-port", "tls-to-a-plain-port", "silent-port"])
def test_a_failed_connection_says_connection_failed_and_nothing_about_the_port(
    embedded_settings: Settings, internal: Listener, problem: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        closed_port = closed.getsockname()[1]
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers TLS
    url = {
        "closed-port": f"https://127.0.0.1:{closed_port}/x",
        "tls-to-a-plain-port": f"https://127.0.0.1:{internal.port}/x",
        "silent-port": f"https://127.0.0.1:{silent.getsockname()[1]}/x",
    }[problem]
    with app_client(embedded_settings, subscriptions_allow_private=True, subscriptions_timeout_seconds=1) as client:
        created = client.post("/v1/subscriptions", json={"url": url}).json()
        ping = client.post(f"/v1/subscriptions/{created['id']}/test").json()
    silent.close()
    assert ping["last_error"] == "connection failed", ping
