"""The HTTP client outbound deliveries are sent with: it connects only to addresses the URL check approved.

`check_target` (`workers/outbound/url_policy.py`) resolves a subscription's host once and approves its
addresses; `PinnedClient.pinned(target)` makes that the only place the attempt's connections can go.
Underneath, httpcore asks its network backend for a TCP connection to ``(host, port)``; the backend
here never resolves the name again but connects to the approved addresses, in order. Everything above
the socket still sees the name, so TLS sends it as SNI and verifies the certificate against it, and
the request's ``Host`` header is the URL's. A connection asked for without an approved target — or
for another host than the one approved — fails.

A kept-alive connection is reused only for the same scheme, host and port, so it was made to an
address approved for that host. Proxies from the environment are not used: a proxy would resolve
the name itself.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from workers.outbound.url_policy import CheckedTarget


class PinnedBackend(httpcore.NetworkBackend):
    """A network backend connecting each thread's requests to the addresses approved for that thread's attempt."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def pinned(self, target: CheckedTarget) -> Iterator[None]:
        host = httpx.URL(target.url).raw_host.decode("ascii").lower()
        self._local.target = (host, target.port, target.addresses)
        try:
            yield
        finally:
            self._local.target = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        target = getattr(self._local, "target", None)
        if target is None or target[0] != host.lower() or target[1] != port:
            raise httpcore.ConnectError(f"no approved address for {host}:{port}")
        failure: Exception = httpcore.ConnectError(f"{host} has no approved address")
        for address in target[2]:
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


class PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport over a connection pool whose connections go through `PinnedBackend`."""

    def __init__(self, backend: PinnedBackend, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class PinnedClient:
    """An `httpx.Client` (thread-safe, shared by a process's delivery threads) and the pin of each attempt."""

    def __init__(self, timeout: float, limits: httpx.Limits) -> None:
        self.backend = PinnedBackend()
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            transport=PinnedTransport(self.backend, limits),
        )

    def pinned(self, target: CheckedTarget) -> typing.ContextManager[None]:
        """Within this block, this thread's requests connect only to `target`'s approved addresses."""
        return self.backend.pinned(target)

    def close(self) -> None:
        self.http.close()
