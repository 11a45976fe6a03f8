"""A parked stream connection (`service/stream/parked.py`): the request has ended, the fan-out alone serves the client.

Real uvicorn with `synctrack web`'s protocol on a thread of this process, under both event loops it may run
(uvloop, and asyncio's own), raw sockets as clients: what is checked is the bytes on the wire.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from schemas.settings import Settings
from service.app import create_app
from service.stream.protocol import PROTOCOL
from tests.support.auth import ADMIN_HEADERS
from tests.support.services import app_in_thread, wait_for
from tests.support.sse_client import stream_status
from workers.ledger.changes import stream_key

LOOPS = ["uvloop", "asyncio"]


@contextmanager
def served(settings: Settings, loop: str) -> Iterator[tuple[Any, str, int]]:
    app = create_app(settings)
    with app_in_thread(app, http=PROTOCOL, loop=loop) as base:
        wait_for(lambda: stream_status(base)["reader"] == "running", timeout=10, message="reader running")
        yield app, base, int(base.rsplit(":", 1)[1])


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


def publish(app: Any, settings: Settings, count: int, size: int = 10) -> list[str]:
    data = '{"padding":"' + "x" * size + '"}'
    with app.state.admin_redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            fields = {"event": "sync.started", "company_id": "co", "connection_id": f"c{i}", "data": data}
            pipe.xadd(stream_key(settings.redis_namespace), fields)
        return [entry.decode() for entry in pipe.execute()]


def ids_in(payload: bytes) -> list[str]:
    return [line[4:].decode() for line in payload.split(b"\n") if line.startswith(b"id: ")]


def read_until(sock: socket.socket, done: Any, timeout: float = 20) -> bytes:
    received, deadline = b"", time.monotonic() + timeout
    while not done(received):
        assert time.monotonic() < deadline, f"timed out with {len(received)} bytes"
        data = sock.recv(1 << 20)
        if not data:
            break
        received += data
    return received


@pytest.mark.parametrize("loop", LOOPS)
def test_a_parked_client_that_stops_reading_gets_everything_in_order_once_it_reads_again(
    settings: Settings, loop: str
) -> None:
    with served(settings, loop) as (app, base, port):
        sock, head = open_stream(port, receive_buffer=4096)
        wait_for(lambda: stream_status(base)["parked"] == 1, timeout=10, message="parked")
        # ~4 MB while the client reads nothing: its socket fills and the transport pauses writing; what comes
        # next waits in the subscriber's buffer.
        published = publish(app, settings, 200, 20_000)
        time.sleep(0.3)
        published += publish(app, settings, 50, 20_000)
        behind = wait_for(lambda: (s := stream_status(base))["buffered"] > 0 and s, timeout=10, message="buffered")
        received = read_until(sock, lambda got: published[-1].encode() in got)
        after_catch_up = stream_status(base)
        more = publish(app, settings, 5)
        received += read_until(sock, lambda got: more[-1].encode() in got)
        after = stream_status(base)
        sock.close()

    payload, ended = dechunk(head.split(b"\r\n\r\n", 1)[1] + received)
    assert ids_in(payload)[1:] == published + more  # after the snapshot: every change once, in order
    assert not ended
    assert behind["parked"] == 1 and behind["overflows"] == 0
    assert after_catch_up["buffered"] == 0 and after["parked"] == 1 and after["overflows"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_parked_client_too_slow_for_its_buffer_is_told_to_reset_and_its_body_ends(
    settings: Settings, loop: str
) -> None:
    with served(settings.model_copy(update={"stream_client_buffer": 10}), loop) as (app, base, port):
        sock, head = open_stream(port, receive_buffer=4096)
        wait_for(lambda: stream_status(base)["parked"] == 1, timeout=10, message="parked")
        publish(app, settings, 300, 20_000)
        wait_for(lambda: stream_status(base)["overflows"] == 1, timeout=10, message="overflowed")
        received = read_until(sock, lambda got: False)  # to the end: the server closes
        after = wait_for(lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=10, message="let go")

    payload, ended = dechunk(head.split(b"\r\n\r\n", 1)[1] + received)
    frames = [f for f in payload.split(b"\n\n") if f]
    assert ended, "the body ends with its last chunk"
    assert b"event: reset" in frames[-1] and b'"reason":"slow_client"' in frames[-1]
    assert sum(b"event: reset" in f for f in frames) == 1
    assert after["parked"] == 0 and after["buffered"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_parked_client_gets_its_heartbeats_and_holds_no_task(settings: Settings, loop: str) -> None:
    with served(settings.model_copy(update={"stream_heartbeat_seconds": 1}), loop) as (_, base, port):
        idle = stream_status(base)
        sock, _ = open_stream(port)
        parked = wait_for(lambda: (s := stream_status(base))["parked"] == 1 and s, timeout=10, message="parked")
        beats = read_until(sock, lambda got: got.count(b": heartbeat") >= 2, timeout=10)
        sock.close()
        gone = wait_for(lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=10, message="client gone")

    assert dechunk(beats)[0] == b": heartbeat\n\n" * beats.count(b": heartbeat")
    assert parked["tasks"] == idle["tasks"]
    assert gone["parked"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_sent_behind_a_stream_leaves_it_unparked_and_served(settings: Settings, loop: str) -> None:
    """A pipelined request waits in the server's queue: the connection stays the server's (never parked)
    and the stream is served by its task as before."""
    with served(settings, loop) as (app, base, port):
        second = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
        sock, head = open_stream(port, extra=second)
        time.sleep(0.3)
        unparked = stream_status(base)
        published = publish(app, settings, 3)
        received = read_until(sock, lambda got: published[-1].encode() in got)
        sock.close()

    assert unparked["clients"] == 1 and unparked["parked"] == 0
    assert ids_in(dechunk(head.split(b"\r\n\r\n", 1)[1] + received)[0])[1:] == published


@pytest.mark.parametrize("loop", LOOPS)
def test_a_parked_stream_ends_with_its_last_chunk_when_the_server_stops(settings: Settings, loop: str) -> None:
    with served(settings, loop) as (_, base, port):
        sock, head = open_stream(port)
        wait_for(lambda: stream_status(base)["parked"] == 1, timeout=10, message="parked")
        started = time.monotonic()
    # Leaving `served` stops the server: the parked connection is the fan-out's to end, not uvicorn's.
    stopped_after = time.monotonic() - started
    rest = read_until(sock, lambda got: False, timeout=5)
    sock.close()

    assert dechunk(head.split(b"\r\n\r\n", 1)[1] + rest)[1], "the body's last chunk came before the close"
    assert stopped_after < 5
