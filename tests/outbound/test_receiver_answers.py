"""How the transport treats what receivers answer, against a raw TCP receiver whose answers the test writes byte
for byte: which answers count by their status, which are failures, and when a connection is used again."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workers.outbound.transport import BadAnswer, ConnectFailed, Destinations, Pool, TimedOut, route

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


DROP = None
"""An answer that is no answer: the receiver closes the connection on reading the request."""


class RawReceiver:
    """Answers each request with the next of `answers` (then 204), `trickle` seconds between its bytes;
    `close_after` closes the connection after each answer. Counts the connections it accepts, and those the
    client closed."""

    def __init__(
        self,
        answers: list[bytes | None],
        close_after: bool = False,
        delay: float = 0.0,
        trickle: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answers, self.close_after, self.delay, self.trickle = list(answers), close_after, delay, trickle
        self.tls = tls
        self.connections = 0
        self.hangups = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        except OSError:  # the client gave up on an answer and hung up
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        self.hangups += 1
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                answer = self.answers.pop(0) if self.answers else NO_CONTENT
                if answer is DROP:
                    return
                time.sleep(self.delay)
                if self.trickle:
                    for byte in answer:
                        conn.sendall(bytes([byte]))
                        time.sleep(self.trickle)
                else:
                    conn.sendall(answer)
                if self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


def head_lines(request: bytes) -> list[bytes]:
    return request.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")


@pytest.fixture
def destinations() -> Iterator[Destinations]:
    destinations = Destinations(allow_http=True, allow_private=True)
    yield destinations
    destinations.close()


def post(destinations: Destinations, receiver: RawReceiver, timeout: float = 2.0) -> int:
    return destinations.post(receiver.url(), [("webhook-id", "msg_1")], b'{"a":1}', timeout, 1024)


def test_a_chunked_answer_with_trailers_is_read_to_its_end_and_the_connection_is_used_again(
    destinations: Destinations,
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n"
    receiver = RawReceiver([chunked])

    codes = [post(destinations, receiver) for _ in range(3)]

    receiver.close()
    assert codes == [200, 204, 204]
    assert receiver.connections == 1


def test_the_request_carries_the_host_the_length_and_the_webhook_headers(destinations: Destinations) -> None:
    receiver = RawReceiver([])

    post(destinations, receiver)

    receiver.close()
    (request,) = receiver.requests
    lines = head_lines(request)
    assert lines[0] == b"post /hook http/1.1"
    assert f"host: 127.0.0.1:{receiver.port}".encode() in lines
    assert b"content-length: 7" in lines
    assert b"webhook-id: msg_1" in lines
    assert request.partition(b"\r\n\r\n")[2] == b'{"a":1}'


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Hooks.Partner.Example/x", b"hooks.partner.example"),
        ("https://hooks.partner.example:8443/x", b"hooks.partner.example:8443"),
        ("http://[2001:db8::1]:80/x", b"[2001:db8::1]"),
        ("http://[2001:db8::1]:8080/x?a=1", b"[2001:db8::1]:8080"),
        ("https://bücher.example/x", b"xn--bcher-kva.example"),
    ],
)
def test_the_host_header_is_the_urls_host_without_its_default_port(url: str, host: bytes) -> None:
    assert route(url, allow_http=True).host == host


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    ],
)
def test_an_answer_that_ends_its_connection_gets_a_new_one_for_the_next_post(
    destinations: Destinations, answer: bytes
) -> None:
    receiver = RawReceiver([answer, answer])

    codes = [post(destinations, receiver) for _ in range(2)]

    receiver.close()
    assert codes == [200, 200]
    assert receiver.connections == 2


def test_a_kept_alive_connection_the_receiver_closed_while_idle_is_replaced_without_a_failure(
    destinations: Destinations,
) -> None:
    receiver = RawReceiver([], close_after=True)  # answers as if it kept the connection, then drops it

    first = post(destinations, receiver)
    time.sleep(0.1)
    second = post(destinations, receiver)

    receiver.close()
    assert (first, second) == (204, 204)
    assert receiver.connections == 2
    assert len(receiver.requests) == 2


def test_a_kept_alive_connection_closed_on_the_next_request_without_an_answer_sends_it_once_more(
    destinations: Destinations,
) -> None:
    receiver = RawReceiver([NO_CONTENT, DROP])  # the second request, on the kept connection, is dropped unanswered

    codes = [post(destinations, receiver) for _ in range(2)]

    receiver.close()
    assert codes == [204, 204]
    assert receiver.connections == 2
    assert len(receiver.requests) == 3


def test_a_new_connection_closed_without_an_answer_is_a_bad_answer_and_not_sent_again(
    destinations: Destinations,
) -> None:
    receiver = RawReceiver([DROP, DROP])

    with pytest.raises(BadAnswer):
        post(destinations, receiver)

    receiver.close()
    assert len(receiver.requests) == 1


def test_an_answer_that_is_not_http_is_a_bad_answer(destinations: Destinations) -> None:
    receiver = RawReceiver([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"])

    with pytest.raises(BadAnswer):
        post(destinations, receiver)
    receiver.close()


@pytest.mark.parametrize("size", [b"-1", b"0x3", b"1_0", b"+3", b""])
def test_a_chunk_size_that_is_not_plain_hex_is_a_bad_answer(destinations: Destinations, size: bytes) -> None:
    receiver = RawReceiver([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n0\r\n\r\n"])

    with pytest.raises(BadAnswer):
        post(destinations, receiver)
    receiver.close()


def test_a_chunk_size_line_that_never_ends_is_refused_before_the_timeout(destinations: Destinations) -> None:
    endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"0" * 200_000
    receiver = RawReceiver([endless])

    started = time.monotonic()
    with pytest.raises(BadAnswer):
        post(destinations, receiver, timeout=5.0)
    receiver.close()
    assert time.monotonic() - started < 4.0  # refused for its length, not left to run into the deadline


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n" + b"x" * 5000,
    ],
)
def test_a_body_over_the_limit_counts_by_its_status_and_its_connection_is_not_kept(
    destinations: Destinations, answer: bytes
) -> None:
    receiver = RawReceiver([answer])

    started = time.monotonic()
    code = post(destinations, receiver, timeout=5.0)  # the limit is 1,024 bytes
    elapsed = time.monotonic() - started
    again = post(destinations, receiver)

    receiver.close()
    assert (code, again) == (200, 204)
    assert elapsed < 4.0, "the body was read no further than the limit, not until the timeout"
    assert receiver.connections == 2


def test_an_answer_that_does_not_come_in_time_times_out(destinations: Destinations) -> None:
    receiver = RawReceiver([], delay=1.0)

    started = time.monotonic()
    with pytest.raises(TimedOut):
        post(destinations, receiver, timeout=0.3)
    elapsed = time.monotonic() - started
    receiver.close()
    assert elapsed < 0.9


def test_an_answer_trickling_in_a_byte_at_a_time_times_out_within_the_timeout(destinations: Destinations) -> None:
    receiver = RawReceiver([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], trickle=0.05)

    started = time.monotonic()
    with pytest.raises(TimedOut):
        post(destinations, receiver, timeout=0.5)  # the whole head takes 2 s; no single byte is late
    elapsed = time.monotonic() - started
    receiver.close()
    assert elapsed < 1.0


def test_a_body_that_does_not_end_in_time_counts_by_its_status(destinations: Destinations) -> None:
    receiver = RawReceiver([b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nnot all of it"])

    code = post(destinations, receiver, timeout=0.3)
    again = post(destinations, receiver)

    receiver.close()
    assert (code, again) == (200, 204)
    assert receiver.connections == 2, "a connection with an unread body is not used again"


NAME = "hooks.partner.example"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for NAME: (certificate, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def names_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every *.partner.example name resolves to 127.0.0.1."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith(".partner.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def tls_receiver(certificate: tuple[Path, Path], names: list[str]) -> RawReceiver:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*certificate)

    def remember(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name or "")

    server.sni_callback = remember
    return RawReceiver([], tls=server)


def trusting(certificate: tuple[Path, Path]) -> Destinations:
    client = ssl.create_default_context(cafile=str(certificate[0]))
    return Destinations(allow_http=False, allow_private=True, ssl_context=client)


@pytest.mark.usefixtures("names_on_loopback")
def test_https_sends_the_urls_name_for_sni_and_the_host_and_keeps_the_connection(
    certificate: tuple[Path, Path],
) -> None:
    names: list[str] = []
    receiver = tls_receiver(certificate, names)
    destinations = trusting(certificate)
    url = f"https://{NAME}:{receiver.port}/hook"

    codes = [destinations.post(url, [("webhook-id", "msg_1")], b"{}", 2.0, 1024) for _ in range(2)]

    destinations.close()
    receiver.close()
    assert codes == [204, 204]
    assert names == [NAME]
    assert receiver.connections == 1
    assert f"host: {NAME}:{receiver.port}".encode() in head_lines(receiver.requests[0])


@pytest.mark.usefixtures("names_on_loopback")
def test_https_to_a_name_the_certificate_does_not_cover_fails_to_connect(certificate: tuple[Path, Path]) -> None:
    receiver = tls_receiver(certificate, [])
    destinations = trusting(certificate)

    with pytest.raises(ConnectFailed):
        destinations.post(f"https://other.partner.example:{receiver.port}/hook", [], b"{}", 2.0, 1024)

    destinations.close()
    receiver.close()
    assert receiver.requests == []


def test_a_pool_retired_during_a_request_lets_it_finish_and_then_closes_its_connection() -> None:
    receiver = RawReceiver([], delay=0.5)
    pool = Pool(("127.0.0.1",), ssl.create_default_context())
    url = route(receiver.url(), allow_http=True).url
    codes: list[int] = []
    sending = threading.Thread(target=lambda: codes.append(pool.post(url, [(b"host", b"x")], b"{}", 2.0, 1024)))

    sending.start()
    time.sleep(0.2)
    pool.retire()
    closed_while_sending = receiver.hangups
    sending.join()
    deadline = time.monotonic() + 2.0
    while receiver.hangups == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    receiver.close()
    assert codes == [204]
    assert closed_while_sending == 0
    assert receiver.hangups == 1, "the connection was closed once its request was done"
