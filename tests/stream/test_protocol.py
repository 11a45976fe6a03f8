"""The web server's protocol (`service/stream/protocol.py`): a `BodyWriter` in every GET's scope, used by the
fan-out to write changes to the sockets of clients that keep up.

Real uvicorn on a thread of this process, a real HTTP client; the same stream under uvicorn's own protocol
is the fallback every other server gets.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest

from schemas.settings import Settings
from service.app import create_app
from service.stream.protocol import PROTOCOL, body_writer, chunk
from tests.support.auth import ADMIN_HEADERS
from tests.support.services import app_in_thread, wait_for
from tests.support.sse_client import SseClient, stream_status
from workers.ledger.changes import stream_key

CHANGES = 20


@pytest.mark.parametrize(("http", "direct", "tasks_per_client"), [(PROTOCOL, True, 0), ("httptools", False, 2)])
def test_every_client_gets_every_change_once_in_order_and_the_fan_out_writes_them_itself_where_it_can(
    settings: Settings, http: str, direct: bool, tasks_per_client: int
) -> None:
    app = create_app(settings)
    with app_in_thread(app, http=http) as base:
        wait_for(lambda: stream_status(base)["reader"] == "running", timeout=10, message="reader running")
        idle = stream_status(base)
        clients = [SseClient(f"{base}/v1/stream", ADMIN_HEADERS) for _ in range(3)]
        try:
            for client in clients:
                assert client.next().event == "snapshot"
            connected = stream_status(base)
            published = []
            for i in range(CHANGES):
                fields = {"event": "sync.started", "company_id": "co", "connection_id": "conn", "data": f'{{"i":{i}}}'}
                published.append(app.state.admin_redis.xadd(stream_key(settings.redis_namespace), fields).decode())
                threading.Event().wait(0.01)
            received = [[event.id for event in client.take(CHANGES)] for client in clients]
            extra = [client.drain(quiet=0.3) for client in clients]
            after = stream_status(base)
        finally:
            for client in clients:
                client.close()

    assert received == [published] * 3 and extra == [[]] * 3
    assert connected["tasks"] - idle["tasks"] == 3 * tasks_per_client
    # Under the writer every live client is parked: no request task is left, the fan-out serves it alone.
    assert connected["parked"] == after["parked"] == (3 if direct else 0), (connected, after)
    if direct:
        assert after["written_directly"] == 3 * CHANGES, after
    else:
        assert after["written_directly"] == 0, after


def test_a_burst_read_in_one_go_reaches_every_client_once_in_order_filtered_or_not(settings: Settings) -> None:
    app = create_app(settings)
    key = stream_key(settings.redis_namespace)
    with app_in_thread(app, http=PROTOCOL) as base:
        wait_for(lambda: stream_status(base)["reader"] == "running", timeout=10, message="reader running")
        every = [SseClient(f"{base}/v1/stream", ADMIN_HEADERS) for _ in range(2)]
        only_b = SseClient(f"{base}/v1/stream?company_id=co-b", ADMIN_HEADERS)
        clients = [*every, only_b]
        try:
            for client in clients:
                assert client.next().event == "snapshot"
            with app.state.admin_redis.pipeline(transaction=False) as burst:
                for i in range(300):
                    company = "co-b" if i % 3 == 0 else "co-a"
                    burst.xadd(
                        key, {"event": "sync.started", "company_id": company, "connection_id": f"c{i}", "data": "{}"}
                    )
                published = [entry.decode() for entry in burst.execute()]
            received = [[event.id for event in client.take(300 if client in every else 100)] for client in clients]
            extra = [client.drain(quiet=0.3) for client in clients]
            after = stream_status(base)
        finally:
            for client in clients:
                client.close()

    assert received[:2] == [published] * 2
    assert received[2] == published[::3]
    assert extra == [[]] * 3
    assert after["written_directly"] == 2 * 300 + 100 and after["overflows"] == 0, after


def test_the_writer_writes_only_while_a_chunked_response_is_under_way() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        writer = body_writer(scope)
        seen[scope["method"]] = writer
        if writer is None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        before = writer.write(chunk(b"too early\n"))
        length = [(b"content-length", b"3")] if scope["path"] == "/fixed" else []
        await send({"type": "http.response.start", "status": 200, "headers": length})
        during = writer.write(chunk(b"written\n"))
        await send({"type": "http.response.body", "body": b"end" if length else b"sent\n"})
        after = writer.write(chunk(b"too late\n"))
        seen[scope["path"]] = (before, during, after)

    with app_in_thread(app, http=PROTOCOL) as base:
        chunked = httpx.get(f"{base}/chunked", timeout=5)
        fixed = httpx.get(f"{base}/fixed", timeout=5)
        posted = httpx.post(f"{base}/chunked", timeout=5)

    assert chunked.content == b"written\nsent\n" and seen["/chunked"] == (False, True, False)
    assert fixed.content == b"end" and seen["/fixed"] == (False, False, False)
    assert posted.status_code == 200 and seen["POST"] is None


def test_the_writer_tells_when_the_client_has_gone_without_anyone_waiting_on_receive() -> None:
    gone = threading.Event()
    released = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        loops.append(asyncio.get_running_loop())
        writer = body_writer(scope)
        assert writer is not None
        writer.on_lost = gone.set
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"open\n", "more_body": True})
        await asyncio.wait_for(released.wait(), 10)  # nobody reads `receive` meanwhile

    with app_in_thread(app, http=PROTOCOL) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert b"open" in sock.recv(4096)
        lost = gone.wait(5)
        loops[0].call_soon_threadsafe(released.set)

    assert lost, "on_lost ran when the client closed"


def test_under_another_protocol_no_writer_is_offered() -> None:
    offered: list[object] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            offered.append(body_writer(scope))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    with app_in_thread(app, http="h11") as base:
        assert httpx.get(base, timeout=5).status_code == 204

    assert offered == [None]


def test_clients_that_vanish_mid_stream_leave_the_others_served_and_the_reader_running(settings: Settings) -> None:
    app = create_app(settings)
    key = stream_key(settings.redis_namespace)
    with app_in_thread(app, http=PROTOCOL) as base:
        wait_for(lambda: stream_status(base)["reader"] == "running", timeout=10, message="reader running")
        port = int(base.rsplit(":", 1)[1])
        vanishing = []
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(
                b"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                + ADMIN_HEADERS["Authorization"].encode()
                + b"\r\n\r\n"
            )
            head = b""
            while b"event: snapshot" not in head:
                received_now = sock.recv(65536)
                assert received_now, f"closed before the snapshot: {head!r}"
                head += received_now
            # Closing with a zero linger time sends a reset, as a client that crashed or lost its network does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            vanishing.append(sock)
        staying = SseClient(f"{base}/v1/stream", ADMIN_HEADERS)
        try:
            assert staying.next().event == "snapshot"
            published = []
            for i in range(60):
                if i % 3 == 0 and vanishing:
                    vanishing.pop().close()
                fields = {"event": "sync.started", "company_id": "co", "connection_id": "c", "data": f'{{"i":{i}}}'}
                published.append(app.state.admin_redis.xadd(key, fields).decode())
                threading.Event().wait(0.005)
            received = [event.id for event in staying.take(60)]
            after = wait_for(
                lambda: (s := stream_status(base))["clients"] == 1 and s, timeout=10, message="the rest let go"
            )
        finally:
            staying.close()

    assert received == published
    assert after["reader"] == "running"
