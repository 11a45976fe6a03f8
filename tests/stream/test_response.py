"""A stream client's socket (`service/stream/response.py`): every change written by the client's own request with
the ASGI `send`, whatever the client does.

Real uvicorn on a thread of this process, under its two HTTP protocols (httptools, h11) and its two event
loops (uvloop, asyncio's own), with real HTTP clients and raw sockets: what is checked is the bytes on the wire.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from tests.support.auth import ADMIN_HEADERS
from tests.support.services import app_in_thread, wait_for
from tests.support.sse_client import SseClient, stream_status
from workers.ledger.changes import stream_key

SERVERS = [("httptools", "uvloop"), ("h11", "asyncio")]
"""uvicorn's (HTTP protocol, event loop): `synctrack web`'s, and the pure-Python pair."""
TASKS_PER_CLIENT = 2
"""A client's request, and the task that waits for it to leave."""


@contextmanager
def served(settings: Settings, http: str = "httptools", loop: str = "uvloop") -> Iterator[tuple[Starlette, str, int]]:
    app = create_app(settings)
    with app_in_thread(app, http=http, loop=loop) as base:
        wait_for(lambda: stream_status(base)["reader"] == "running", timeout=10, message="reader running")
        yield app, base, int(base.rsplit(":", 1)[1])


def publish(
    app: Starlette, settings: Settings, count: int, size: int = 10, company: Callable[[int], str] = str
) -> list[str]:
    """What the workers would publish: `count` changes of about `size` bytes, in one round trip."""
    data = '{"padding":"' + "x" * size + '"}'
    with services(app).admin_redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            fields: dict[Any, Any] = {"event": "sync.started", "company_id": company(i), "connection_id": f"c{i}"}
            fields["data"] = data
            pipe.xadd(stream_key(settings.redis_namespace), fields)
        return [entry.decode() for entry in pipe.execute()]


def open_stream(port: int, receive_buffer: int | None = None, extra: bytes = b"") -> tuple[socket.socket, bytes]:
    """An HTTP/1.1 stream request on a raw socket; returns it with what arrived up to the end of the snapshot."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    request = f"GET /v1/stream HTTP/1.1\r\nHost: t\r\nAuthorization: {ADMIN_HEADERS['Authorization']}\r\n\r\n"
    sock.sendall(request.encode() + extra)
    head = b""
    while b"event: snapshot" not in head or not head.endswith(b"\n\n\r\n"):
        data = sock.recv(65536)
        assert data, f"closed before the snapshot: {head!r}"
        head += data
    return sock, head


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body, and whether its last chunk came."""
    out: list[bytes] = []
    rest = body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out), True
        out.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n", "malformed chunk"
        rest = rest[size + 2 :]
    return b"".join(out), False


def body_after(head: bytes, rest: bytes) -> tuple[bytes, bool]:
    return dechunk(head.split(b"\r\n\r\n", 1)[1] + rest)


def ids_in(payload: bytes) -> list[str]:
    return [line[4:].decode() for line in payload.split(b"\n") if line.startswith(b"id: ")]


def read_until(sock: socket.socket, done: Callable[[bytes], bool], timeout: float = 20) -> bytes:
    received, deadline = b"", time.monotonic() + timeout
    while not done(received):
        assert time.monotonic() < deadline, f"timed out with {len(received)} bytes"
        data = sock.recv(1 << 20)
        if not data:
            break
        received += data
    return received


@pytest.mark.parametrize(("http", "loop"), SERVERS)
def test_every_client_gets_every_change_once_in_order_each_through_its_own_request(
    settings: Settings, http: str, loop: str
) -> None:
    with served(settings, http, loop) as (app, base, _):
        idle = stream_status(base)
        clients = [SseClient(f"{base}/v1/stream", ADMIN_HEADERS) for _ in range(3)]
        try:
            for client in clients:
                assert client.next().event == "snapshot"
            connected = stream_status(base)
            published = []
            for _ in range(20):
                published += publish(app, settings, 1)
                threading.Event().wait(0.01)
            received = [[event.id for event in client.take(20)] for client in clients]
            extra = [client.drain(quiet=0.3) for client in clients]
        finally:
            for client in clients:
                client.close()

    assert received == [published] * 3 and extra == [[]] * 3
    assert connected["tasks"] - idle["tasks"] == 3 * TASKS_PER_CLIENT, (idle, connected)
    assert connected["written_directly"] == connected["parked"] == 0


def test_a_burst_read_in_one_go_reaches_every_client_once_in_order_filtered_or_not(settings: Settings) -> None:
    with served(settings) as (app, base, _):
        every = [SseClient(f"{base}/v1/stream", ADMIN_HEADERS) for _ in range(2)]
        only_b = SseClient(f"{base}/v1/stream?company_id=co-b", ADMIN_HEADERS)
        clients = [*every, only_b]
        try:
            for client in clients:
                assert client.next().event == "snapshot"
            published = publish(app, settings, 300, company=lambda i: "co-b" if i % 3 == 0 else "co-a")
            received = [[event.id for event in client.take(300 if client in every else 100)] for client in clients]
            extra = [client.drain(quiet=0.3) for client in clients]
            after = stream_status(base)
        finally:
            for client in clients:
                client.close()

    assert received[:2] == [published] * 2
    assert received[2] == published[::3]
    assert extra == [[]] * 3
    assert after["overflows"] == 0 and after["buffered"] == 0


@pytest.mark.parametrize(("http", "loop"), SERVERS)
def test_a_client_that_leaves_is_let_go_at_once_not_at_its_next_heartbeat(
    settings: Settings, http: str, loop: str
) -> None:
    with served(settings, http, loop) as (_, base, port):
        idle = stream_status(base)
        sock, _ = open_stream(port)
        assert stream_status(base)["clients"] == 1
        started = time.monotonic()
        sock.close()
        gone = wait_for(lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=5, message="client gone")

    assert time.monotonic() - started < 2, "the heartbeat is a minute away: the disconnect itself let it go"
    assert gone["tasks"] == idle["tasks"]


def test_clients_that_vanish_mid_stream_leave_the_others_served_and_the_reader_running(settings: Settings) -> None:
    with served(settings) as (app, base, port):
        vanishing = []
        for _ in range(20):
            sock, _ = open_stream(port)
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
                published += publish(app, settings, 1)
                threading.Event().wait(0.005)
            received = [event.id for event in staying.take(60)]
            after = wait_for(
                lambda: (s := stream_status(base))["clients"] == 1 and s, timeout=10, message="the rest let go"
            )
        finally:
            staying.close()

    assert received == published
    assert after["reader"] == "running"


@pytest.mark.parametrize(("http", "loop"), SERVERS)
def test_a_client_that_stops_reading_gets_everything_in_order_once_it_reads_again(
    settings: Settings, http: str, loop: str
) -> None:
    with served(settings, http, loop) as (app, base, port):
        sock, head = open_stream(port, receive_buffer=4096)
        # ~6 MB while the client reads nothing: its socket fills, its request waits in `send` with what it
        # took last, and what comes next waits in its buffer.
        published = publish(app, settings, 200, 20_000)
        for _ in range(2):
            time.sleep(0.3)
            published += publish(app, settings, 50, 20_000)
        behind = wait_for(lambda: (s := stream_status(base))["buffered"] > 0 and s, timeout=10, message="buffered")
        received = read_until(sock, lambda got: published[-1].encode() in got)
        after_catch_up = stream_status(base)
        more = publish(app, settings, 5)
        received += read_until(sock, lambda got: more[-1].encode() in got)
        sock.close()

    payload, ended = body_after(head, received)
    assert ids_in(payload)[1:] == published + more  # after the snapshot: every change once, in order
    assert not ended
    assert behind["overflows"] == after_catch_up["overflows"] == 0
    assert after_catch_up["buffered"] == 0


@pytest.mark.parametrize(("http", "loop"), SERVERS)
def test_a_client_too_slow_for_its_buffer_is_told_to_reset_and_its_body_ends(
    settings: Settings, http: str, loop: str
) -> None:
    with served(settings.model_copy(update={"stream_client_buffer": 10}), http, loop) as (app, base, port):
        sock, head = open_stream(port, receive_buffer=4096)
        publish(app, settings, 300, 20_000)
        wait_for(lambda: stream_status(base)["overflows"] == 1, timeout=10, message="overflowed")
        received = read_until(sock, lambda got: False)  # to the end: the server closes
        after = wait_for(lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=10, message="let go")

    payload, ended = body_after(head, received)
    frames = [f for f in payload.split(b"\n\n") if f]
    assert ended, "the body ends with its last chunk"
    assert b"event: reset" in frames[-1] and b'"reason":"slow_client"' in frames[-1]
    assert sum(b"event: reset" in f for f in frames) == 1
    assert len(frames) - 2 < 300, "changes past the buffer were dropped, not queued"
    assert after["buffered"] == 0


def test_an_idle_client_gets_a_heartbeat_every_interval(settings: Settings) -> None:
    with served(settings.model_copy(update={"stream_heartbeat_seconds": 1})) as (_, base, port):
        sock, _ = open_stream(port)
        started = time.monotonic()
        beats = read_until(sock, lambda got: got.count(b": heartbeat") >= 2, timeout=10)
        took = time.monotonic() - started
        sock.close()

    assert dechunk(beats)[0] == b": heartbeat\n\n" * beats.count(b": heartbeat")
    assert 1 <= took < 5
