"""One outbound POST over a kept-alive HTTP/1.1 connection: what a delivery needs of HTTP, and nothing more.

A delivery sends a small body and needs only the status code back, so the request is written in one
`sendall` and the answer's head is parsed just far enough to frame its body (`Content-Length`, chunked,
or until close), which is read and dropped up to a limit. A general-purpose client spent most of a
delivery's CPU on header objects and its state machine. Redirects are not followed, 1xx answers are
skipped, and a connection is kept only when the answer allows it and its body was read to the end.

Errors are this module's three, each raised at the point the failure is known: `ConnectFailed` (no
connection or no TLS session), `TimedOut` (no progress within the timeout), `BadAnswer` (the bytes that
came back are not an HTTP/1.1 answer, or the connection closed before one).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass

from schemas.errors import SynctrackError

MAX_HEAD_BYTES = 64 * 1024
"""An answer's status line and headers larger than this are not a webhook receiver's answer."""
READ_BYTES = 64 * 1024
MAX_CHUNK_SIZE_DIGITS = 16
HEX_DIGITS = b"0123456789abcdefABCDEF"
"""A chunk size is hex digits only: no sign, no `0x`, no underscores (which `int(…, 16)` would take)."""


class HttpFailure(SynctrackError):
    """Raised when a POST got no HTTP answer (see the subclasses)."""


class ConnectFailed(HttpFailure):
    """Raised when no connection (TCP, then TLS for https) could be made to any approved address."""


class TimedOut(HttpFailure):
    """Raised when sending or reading made no progress within the timeout."""


class BadAnswer(HttpFailure):
    """Raised when the answer is not valid HTTP/1.1 or the connection closed before it was complete."""


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: the URL's scheme and host (SNI, certificate, `Host`), the port, the addresses."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class Connection:
    """A socket to one of an origin's approved addresses; used by one thread at a time."""

    def __init__(self, origin: Origin, timeout: float, ssl_context: ssl.SSLContext) -> None:
        failure: Exception | None = None
        for address in origin.addresses:
            try:
                sock = socket.create_connection((address, origin.port), timeout=timeout)
            except OSError as exc:
                failure = exc
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if origin.scheme == "https":
                    sock = ssl_context.wrap_socket(sock, server_hostname=origin.host)
            except OSError as exc:  # ssl.SSLError and socket.timeout are OSErrors
                sock.close()
                raise ConnectFailed(type(exc).__name__) from None
            self.sock: socket.socket = sock
            self._buffer = b""
            self._deadline = 0.0
            self.answered = False
            """Whether any byte of an answer arrived on this connection (else a reused one may have been
            closed by the receiver just before the request)."""
            return
        raise ConnectFailed(type(failure).__name__ if failure else "no approved address")

    def idle_and_open(self) -> bool:
        """Whether a kept-alive connection can carry another request: nothing arrived on it while it was idle
        (a readable idle connection was closed by the receiver, or sent something unasked)."""
        if self._buffer:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def post(self, head: bytes, body: bytes, timeout: float, max_body_bytes: int) -> tuple[int, bool]:
        """Send one request (`head` ends with the blank line) and read its answer within `timeout` seconds;
        returns (status code, whether this connection can be kept). Raises `TimedOut` or `BadAnswer`.

        An answer whose head came in time but whose body did not counts by its status, like one whose body
        is over `max_body_bytes`: the receiver does not hold the thread, and the connection is not kept."""
        self._deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        status = 0
        try:
            self.sock.sendall(head + body)
            while True:
                status, headers, version = self._read_head()
                if not 100 <= status < 200:
                    break
            kept = self._read_body(status, headers, max_body_bytes)
        except (TimeoutError, TimedOut):
            if status >= 200:
                return status, False
            raise TimedOut("no answer in time") from None
        except OSError:
            raise BadAnswer("connection lost") from None
        connection = headers.get(b"connection", b"").lower()
        if version == b"HTTP/1.0":
            kept = kept and b"keep-alive" in connection
        return status, kept and b"close" not in connection

    def _read_head(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise BadAnswer("head too large")
            self._fill()
        lines = self._buffer[:end].split(b"\r\n")
        self._buffer = self._buffer[end + 4 :]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
            raise BadAnswer("not an HTTP/1.1 status line")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadAnswer("malformed header")
            key = name.lower()
            headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
        return int(parts[1]), headers, parts[0]

    def _read_body(self, status: int, headers: dict[bytes, bytes], limit: int) -> bool:
        """Read and drop the body; True if it was read to its end (the connection can be kept)."""
        if status in (204, 304):
            return True
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return self._read_chunked(limit)
        length = headers.get(b"content-length")
        if length is None:
            return False  # framed by the close: never reusable, and the status is all that counts
        if not length.isdigit():
            raise BadAnswer("bad content-length")
        remaining = int(length)
        if remaining > limit:
            return False
        while len(self._buffer) < remaining:
            self._fill()
        self._buffer = self._buffer[remaining:]
        return True

    def _read_chunked(self, limit: int) -> bool:
        received = 0
        while True:
            end = self._line_end()
            size_text = self._buffer[:end].split(b";", 1)[0].strip()
            if not size_text or len(size_text) > MAX_CHUNK_SIZE_DIGITS or size_text.strip(HEX_DIGITS):
                raise BadAnswer("bad chunk size")
            size = int(size_text, 16)
            self._buffer = self._buffer[end + 2 :]
            if size == 0:
                while (end := self._line_end()) != 0:  # trailers, up to the blank line
                    self._buffer = self._buffer[end + 2 :]
                self._buffer = self._buffer[2:]
                return True
            received += size
            if received > limit:
                return False
            while len(self._buffer) < size + 2:
                self._fill()
            self._buffer = self._buffer[size + 2 :]

    def _line_end(self) -> int:
        """Where the next CRLF starts in the buffer, reading more as needed; a line longer than an answer's
        whole head may be is refused, so a receiver cannot make the buffer grow without end."""
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise BadAnswer("line too long")
            self._fill()
        return end

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut("no answer in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(READ_BYTES)
        if not data:
            raise BadAnswer("connection closed before the answer was complete")
        self.answered = True
        self._buffer += data
