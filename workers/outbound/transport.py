"""Where outbound deliveries are sent from: one connection pool per destination, connecting only to the
addresses the URL check approved.

A destination is a URL's scheme, host and port. `Destinations.post(url, …)` sends over the pool of the
URL's destination, which never resolves the name again but connects to the addresses `check_target`
(`workers/outbound/url_policy.py`) approved, in order (`workers/outbound/http1.py`). Everything above
the socket still sees the name, so TLS sends it as SNI and verifies the certificate against it, and the
request's ``Host`` header is the URL's.

The pool and its kept-alive connections serve every delivery to that destination in this process, batch
after batch: a connection costs one handshake, not one per delivery. The approval lasts
`RECHECK_SECONDS`, or until a connection to the destination fails; then the name is resolved and checked
again before the next attempt. The same addresses keep the pool; other approved addresses get a new pool
(the old one is closed); a refused check closes the pool and refuses the attempt. So a name re-pointed at
an internal address (DNS rebinding) is never connected to, and is refused as soon as it is re-checked.
Proxies from the environment are not used: a proxy would resolve the name itself.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import httpx

from workers.outbound.http1 import BadAnswer, Connection, Origin
from workers.outbound.url_policy import Address, UnsafeUrl, check_target, check_url

RECHECK_SECONDS = 60.0
"""How long a destination's approved addresses are used before its name is resolved and checked again."""
MAX_IDLE_CONNECTIONS = 50
"""Per destination and process: more than the threads of one process, which send one POST at a time."""
KEEPALIVE_SECONDS = 30.0
"""An idle connection older than this is closed rather than reused: receivers drop idle connections too."""
CLIENT_HEADERS = b"accept: */*\r\naccept-encoding: gzip, deflate\r\nconnection: keep-alive\r\n"
"""What a general-purpose HTTP client sends beside the webhook's own headers, `Host` and `Content-Length`."""

Destination = tuple[str, str, int]
"""(scheme, host, port) of a URL: what one pool serves."""


class Pool:
    """The kept-alive connections to one destination's approved addresses, shared by a process's threads."""

    def __init__(self, origin: Origin, ssl_context: ssl.SSLContext) -> None:
        self.origin, self._ssl = origin, ssl_context
        self._idle: list[tuple[Connection, float]] = []
        self._lock = threading.Lock()
        self._closed = False

    def post(self, target: bytes, headers: bytes, body: bytes, timeout: float, max_body_bytes: int) -> int:
        """POST `body` to `target` (the URL's path and query); returns the status code. Raises
        `ConnectFailed`, `TimedOut` or `BadAnswer` (`workers/outbound/http1.py`)."""
        head = b"POST %s HTTP/1.1\r\nhost: %s\r\n%s%scontent-length: %d\r\n\r\n" % (
            target,
            self.origin.host_header.encode("ascii"),
            headers,
            CLIENT_HEADERS,
            len(body),
        )
        connection = self._take()
        if connection is not None:
            try:
                return self._post(connection, head, body, timeout, max_body_bytes)
            except BadAnswer:
                if connection.answered:
                    raise
                # Closed by the receiver while idle, just before this request: once more, on a new connection.
        connection = Connection(self.origin, timeout, self._ssl)
        return self._post(connection, head, body, timeout, max_body_bytes)

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for connection, _ in idle:
            connection.close()

    def _post(self, connection: Connection, head: bytes, body: bytes, timeout: float, max_body_bytes: int) -> int:
        try:
            status, kept = connection.post(head, body, timeout, max_body_bytes)
        except BaseException:
            connection.close()
            raise
        if kept:
            self._give_back(connection)
        else:
            connection.close()
        return status

    def _take(self) -> Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection, since = self._idle.pop()
            if now - since < KEEPALIVE_SECONDS and connection.idle_and_open():
                connection.answered = False
                return connection
            connection.close()

    def _give_back(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()


def _header_line(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"header {name!r} cannot be sent as given")
    return b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii"))


@dataclass
class _Entry:
    addresses: frozenset[Address]
    pool: Pool
    checked_at: float


@dataclass(frozen=True)
class Route:
    """A URL as a delivery sends to it: its destination, and the request target (path and query) as bytes."""

    destination: Destination
    target: bytes


@lru_cache(maxsize=1024)
def route(url: str, allow_http: bool) -> Route:
    """`url`'s destination (host IDNA-encoded, lower case) and request target. Raises UnsafeUrl.

    The URL's form is checked here, once per URL (subscriptions send to the same few URLs over and over);
    what its host resolves to is the destination's check (`Destinations`)."""
    check_url(url, allow_http=allow_http, allow_private=True)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrl(f"url is not valid: {exc}") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.raw_host.decode("ascii").lower()
    return Route((parsed.scheme, host, port), parsed.raw_path)


class Destinations:
    """The pools of one process, shared by its delivery threads (a pool is thread-safe)."""

    def __init__(
        self,
        *,
        allow_http: bool,
        allow_private: bool,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` defaults to the system's and certifi's CAs, hostnames verified."""
        self.allow_http, self.allow_private = allow_http, allow_private
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._ssl: ssl.SSLContext = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._pools: dict[Destination, _Entry] = {}
        self._lock = threading.Lock()

    def post(
        self, url: str, headers: Iterable[tuple[str, str]], body: bytes, timeout: float, max_body_bytes: int
    ) -> int:
        """POST `body` with `headers` to `url`; returns the status code. Raises `UnsafeUrl` if the check
        refuses the URL, else the errors of `Pool.post`."""
        path = route(url, self.allow_http)
        lines = b"".join(_header_line(name, value) for name, value in headers)
        return self._pool(url, path.destination).post(path.target, lines, body, timeout, max_body_bytes)

    def _pool(self, url: str, destination: Destination) -> Pool:
        now = self.clock()
        with self._lock:
            current = self._pools.get(destination)
        if current is not None and now - current.checked_at < self.recheck_seconds:
            return current.pool
        try:
            target = check_target(url, allow_http=self.allow_http, allow_private=self.allow_private)
        except UnsafeUrl:
            self._replace(destination, None)
            raise
        addresses = frozenset(target.addresses)
        with self._lock:
            current = self._pools.get(destination)
            if current is not None and current.addresses == addresses:
                current.checked_at = now
                return current.pool
        scheme, host, port = destination
        origin = Origin(scheme, host, port, tuple(str(a) for a in target.addresses))
        fresh = _Entry(addresses, Pool(origin, self._ssl), now)
        self._replace(destination, fresh)
        return fresh.pool

    def suspect(self, url: str) -> None:
        """A connection to `url`'s destination failed: check its name again before the next attempt."""
        destination = route(url, self.allow_http).destination
        with self._lock:
            current = self._pools.get(destination)
            if current is not None:
                current.checked_at = float("-inf")

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for entry in pools:
            entry.pool.close()

    def _replace(self, destination: Destination, entry: _Entry | None) -> None:
        """Make `entry` the destination's pool (None: it has none) and close the one it replaces: its idle
        connections now, the ones still carrying a request when that request is done."""
        with self._lock:
            old = self._pools.pop(destination, None)
            if entry is not None:
                self._pools[destination] = entry
        if old is not None and old is not entry:
            old.pool.close()
