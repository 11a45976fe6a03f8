"""Outbound HTTP: one httpcore pool per destination (scheme, host, port), connecting only to the addresses
`check_target` approved while the URL's name is still the SNI, the certificate's name and `Host`. An approval lasts
`RECHECK_SECONDS` or until a connection fails, so a name re-pointed at an internal address (DNS rebinding) is never
connected to. No proxy: a proxy would resolve the name itself.
"""

from __future__ import annotations

import math
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httpcore
import httpx

from schemas.errors import SynctrackError
from workers.outbound.url_policy import UnsafeUrl, check_target, check_url

RECHECK_SECONDS = 60.0
MAX_IDLE_CONNECTIONS = 50
"""Per destination and process: more than the threads of one process, which send one POST at a time."""
KEEPALIVE_SECONDS = 30.0
CLIENT_HEADERS = [(b"accept", b"*/*"), (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive")]

Destination = tuple[str, str, int]
"""(scheme, host, port) of a URL: what one pool serves."""


class ConnectFailed(SynctrackError):
    """Raised when no connection (TCP, then TLS for https) could be made to any approved address."""


class TimedOut(SynctrackError):
    """Raised when the request was not sent, or its answer's status did not come, within the timeout."""


class BadAnswer(SynctrackError):
    """Raised when the answer is not valid HTTP/1.1 or the connection closed before it was complete."""


class _Attempt(threading.local):
    """The calling thread's current POST (httpcore sends a request and reads its answer in the caller's thread)."""

    timeout = 0.0
    deadline = math.inf
    """When the exchange must be over: set by its first byte sent (connecting has its own timeout)."""
    connected = False
    answered = False


class _Stream(httpcore.NetworkStream):
    """A connection's stream, every read and write bounded by its attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, attempt: _Attempt) -> None:
        self._inner, self._attempt = inner, attempt

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, self._remaining(httpcore.ReadTimeout))
        if data:
            self._attempt.answered = True
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._remaining(httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._attempt)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def _remaining(self, late: type[httpcore.TimeoutException]) -> float:
        attempt = self._attempt
        if attempt.deadline == math.inf:
            attempt.deadline = time.monotonic() + attempt.timeout
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            raise late("no answer in time")
        return remaining


class PinnedBackend(httpcore.SyncBackend):
    """Connects to the approved addresses, in order, whatever name httpcore asks for."""

    def __init__(self, addresses: tuple[str, ...], attempt: _Attempt) -> None:
        self.addresses, self._attempt = addresses, attempt

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        self._attempt.connected = True
        failure: httpcore.NetworkError | httpcore.TimeoutException = httpcore.ConnectError("no approved address")
        for address in self.addresses:
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            return _Stream(stream, self._attempt)
        raise failure


class Pool:
    """The kept-alive connections to one destination's approved addresses, shared by a process's threads."""

    def __init__(self, addresses: tuple[str, ...], ssl_context: ssl.SSLContext) -> None:
        self.addresses = frozenset(addresses)
        self.checked_at = -math.inf
        """When the destination's name was last found to resolve to `addresses` (`Destinations.clock`)."""
        self._attempt = _Attempt()
        self._http = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=None,
            max_keepalive_connections=MAX_IDLE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=PinnedBackend(addresses, self._attempt),
        )
        self._lock = threading.Lock()
        self._sending = 0
        self._retired = False

    def post(
        self, url: httpcore.URL, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float, max_body_bytes: int
    ) -> int:
        """POST `body` to `url`; returns the status code. Raises `ConnectFailed`, `TimedOut` or `BadAnswer`.
        A kept-alive connection closed before any byte of an answer came gets the request once more."""
        self._in_use(+1)
        try:
            try:
                return self._exchange(url, headers, body, timeout, max_body_bytes)
            except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
                if self._attempt.connected or self._attempt.answered:
                    raise
            return self._exchange(url, headers, body, timeout, max_body_bytes)
        except (httpcore.ConnectError, httpcore.ConnectTimeout):
            # Never the socket's or TLS's own words: "refused" against "timed out" would tell whoever reads the
            # delivery log which ports are open behind the address.
            raise ConnectFailed("connection failed") from None
        except httpcore.TimeoutException:
            raise TimedOut(f"timeout after {timeout:g}s") from None
        except (httpcore.RemoteProtocolError, httpcore.NetworkError):
            raise BadAnswer("the answer was not valid HTTP") from None
        finally:
            self._in_use(-1)

    def _exchange(
        self, url: httpcore.URL, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float, max_body_bytes: int
    ) -> int:
        """One request and its answer. A body that does not end in time, or is over `max_body_bytes`, is read no
        further: the status counts, and the connection is closed rather than kept."""
        attempt = self._attempt
        attempt.timeout, attempt.deadline, attempt.connected, attempt.answered = timeout, math.inf, False, False
        timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        with self._http.stream("POST", url, headers=headers, content=body, extensions={"timeout": timeouts}) as answer:
            received = 0
            try:
                for chunk in answer.iter_stream():
                    received += len(chunk)
                    if received > max_body_bytes:
                        break
            except httpcore.TimeoutException:
                pass
            return answer.status

    def retire(self) -> None:
        """Close the connections: now if no request is using them, else when the last such request is done."""
        self._retired = True
        self._in_use(0)

    def _in_use(self, change: int) -> None:
        """Count the requests in flight; once a retired pool has none, close its connections."""
        with self._lock:
            self._sending += change
            close = self._retired and not self._sending
        if close:
            self._http.close()


@dataclass(frozen=True)
class Route:
    """A URL as a delivery sends to it: its destination, httpcore's URL and its `Host` header."""

    destination: Destination
    url: httpcore.URL
    host: bytes


@lru_cache(maxsize=1024)
def route(url: str, allow_http: bool) -> Route:
    """`url`'s destination (host IDNA-encoded, lower case), httpcore URL and `Host`. Raises UnsafeUrl.
    Checks the URL's form, once per URL; what its host resolves to is checked by `Destinations`."""
    check_url(url, allow_http=allow_http, allow_private=True)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrl(f"url is not valid: {exc}") from None
    default = 443 if parsed.scheme == "https" else 80
    port = parsed.port or default
    host = parsed.raw_host.decode("ascii").lower()
    named = f"[{host}]" if ":" in host else host
    return Route(
        (parsed.scheme, host, port),
        httpcore.URL(scheme=parsed.raw_scheme, host=host, port=port, target=parsed.raw_path),
        (named if port == default else f"{named}:{port}").encode("ascii"),
    )


class Destinations:
    """The pools of one process, shared by its delivery threads (a pool is thread-safe)."""

    def __init__(self, *, allow_http: bool, allow_private: bool, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context` defaults to certifi's CAs, hostnames verified; one serves every pool."""
        self.allow_http, self.allow_private = allow_http, allow_private
        self.clock: Callable[[], float] = time.monotonic
        self._ssl: ssl.SSLContext = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._pools: dict[Destination, Pool] = {}
        self._lock = threading.Lock()

    def post(
        self, url: str, headers: Iterable[tuple[str, str]], body: bytes, timeout: float, max_body_bytes: int
    ) -> int:
        """POST `body` with `headers` to `url`; returns the status code. Raises `UnsafeUrl` or `Pool.post`'s errors;
        after `ConnectFailed` the destination's name is checked again before its next POST."""
        path = route(url, self.allow_http)
        lines = [(b"host", path.host)]
        lines += [(name.encode("ascii"), value.encode("ascii")) for name, value in headers]
        pool = self._pool(url, path.destination)
        try:
            return pool.post(path.url, lines + CLIENT_HEADERS, body, timeout, max_body_bytes)
        except ConnectFailed:
            pool.checked_at = -math.inf
            raise

    def _pool(self, url: str, destination: Destination) -> Pool:
        now = self.clock()
        with self._lock:
            current = self._pools.get(destination)
        if current is not None and now - current.checked_at < RECHECK_SECONDS:
            return current
        try:
            target = check_target(url, allow_http=self.allow_http, allow_private=self.allow_private)
        except UnsafeUrl:
            self._replace(destination, None)
            raise
        approved = tuple(str(address) for address in target)
        with self._lock:
            current = self._pools.get(destination)
            if current is not None and current.addresses == frozenset(approved):
                current.checked_at = now
                return current
        fresh = Pool(approved, self._ssl)
        fresh.checked_at = now
        self._replace(destination, fresh)
        return fresh

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.retire()

    def _replace(self, destination: Destination, pool: Pool | None) -> None:
        """Make `pool` the destination's (None: it has none) and retire the one it replaces."""
        with self._lock:
            old = self._pools.pop(destination, None)
            if pool is not None:
                self._pools[destination] = pool
        if old is not None and old is not pool:
            old.retire()
