"""Where outbound deliveries are sent from: one connection pool per destination, connecting only to the
addresses the URL check approved.

A destination is a URL's scheme, host and port. `Destinations.route(url)` answers with the pool of the
URL's destination; the pool's network backend never resolves the name again but connects to the
addresses `check_target` (`workers/outbound/url_policy.py`) approved, in order. Everything above the
socket still sees the name, so TLS sends it as SNI and verifies the certificate against it, and the
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
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import httpcore
import httpx

from workers.outbound.url_policy import Address, UnsafeUrl, check_target

RECHECK_SECONDS = 60.0
"""How long a destination's approved addresses are used before its name is resolved and checked again."""
MAX_CONNECTIONS = 50
"""Per destination and process: more than the threads of one process, which send one POST at a time."""
KEEPALIVE_SECONDS = 30.0
"""An idle connection is closed after this; a busy destination's connections are never idle that long."""
CLIENT_HEADERS = (("accept", "*/*"), ("accept-encoding", "gzip, deflate"), ("connection", "keep-alive"))
"""What a general-purpose HTTP client sends beside the webhook's own headers (`Host` and `Content-Length`
are added per request)."""

Destination = tuple[str, str, int]
"""(scheme, host, port) of a URL: what one pool serves."""


class PinnedBackend(httpcore.NetworkBackend):
    """A network backend connecting to one host's approved addresses only, whatever the name resolves to now."""

    def __init__(self, host: str, port: int, addresses: tuple[Address, ...]) -> None:
        self._inner = httpcore.SyncBackend()
        self.host, self.port, self.addresses = host, port, addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host.lower() != self.host or port != self.port:
            raise httpcore.ConnectError(f"no approved address for {host}:{port}")
        failure: Exception = httpcore.ConnectError(f"{host} has no approved address")
        for address in self.addresses:
            try:
                return self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("outbound deliveries do not use unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass
class _Pool:
    addresses: tuple[Address, ...]
    pool: httpcore.ConnectionPool
    checked_at: float


@lru_cache(maxsize=1024)
def request_url(url: str) -> tuple[Destination, httpcore.URL]:
    """The destination of `url` and the URL as the pool takes it (host IDNA-encoded, lower case).

    Parsed once per URL: subscriptions send to the same few URLs over and over."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.raw_host.decode("ascii").lower()
    return (parsed.scheme, host, port), httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=port, target=parsed.raw_path
    )


class Destinations:
    """The pools of one process, shared by its delivery threads (a pool is thread-safe)."""

    def __init__(
        self,
        *,
        allow_http: bool,
        allow_private: bool,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_http, self.allow_private = allow_http, allow_private
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._ssl: ssl.SSLContext = httpx.create_ssl_context(trust_env=False)
        self._pools: dict[Destination, _Pool] = {}
        self._lock = threading.Lock()

    def route(self, url: str) -> tuple[httpcore.URL, httpcore.ConnectionPool]:
        """The URL to request and the pool to request it from; raises `UnsafeUrl` if the check refuses it."""
        destination, target_url = request_url(url)
        now = self.clock()
        with self._lock:
            current = self._pools.get(destination)
        if current is not None and now - current.checked_at < self.recheck_seconds:
            return target_url, current.pool
        try:
            target = check_target(url, allow_http=self.allow_http, allow_private=self.allow_private)
        except UnsafeUrl:
            self._replace(destination, None)
            raise
        with self._lock:
            current = self._pools.get(destination)
            if current is not None and set(current.addresses) == set(target.addresses):
                current.checked_at = now
                return target_url, current.pool
        scheme, host, port = destination
        fresh = _Pool(target.addresses, self._new_pool(host, port, target.addresses), now)
        self._replace(destination, fresh)
        return target_url, fresh.pool

    def suspect(self, url: str) -> None:
        """A connection to `url`'s destination failed: check its name again before the next attempt."""
        destination, _ = request_url(url)
        with self._lock:
            current = self._pools.get(destination)
            if current is not None:
                current.checked_at = float("-inf")

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for entry in pools:
            entry.pool.close()

    def _new_pool(self, host: str, port: int, addresses: tuple[Address, ...]) -> httpcore.ConnectionPool:
        return httpcore.ConnectionPool(
            ssl_context=self._ssl,
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=PinnedBackend(host, port, addresses),
        )

    def _replace(self, destination: Destination, entry: _Pool | None) -> None:
        """Make `entry` the destination's pool (None: it has none) and close the one it replaces; an attempt
        still sending on that one fails and is retried like any failed attempt."""
        with self._lock:
            old = self._pools.pop(destination, None)
            if entry is not None:
                self._pools[destination] = entry
        if old is not None and old is not entry:
            old.pool.close()
