"""Where Synctrack may send outbound webhooks: a subscription must not aim it at internal services.

Checked when a subscription is created or changed (the API answers `invalid_url`) and again before
every attempt, because a name can be re-pointed at a private address after it was accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from schemas.errors import SynctrackError

MAX_URL_LENGTH = 2048


class UnsafeUrl(SynctrackError, ValueError):
    """Raised when a URL is malformed, not https, or reaches an address that is not public."""


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # `is_global` is False for private, loopback, link-local, shared (100.64/10), reserved and
    # documentation ranges; multicast is not a destination for a POST either.
    return not address.is_global or address.is_multicast


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to (an IP literal resolves to itself). Raises UnsafeUrl."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeUrl(f"host {host!r} does not resolve: {exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """Return `url` if Synctrack may POST to it, else raise `UnsafeUrl` with the reason.

    https only unless `allow_http`; every address the host resolves to must be public unless
    `allow_private`.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"url is not valid: {exc}") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUrl("url must use https" if not allow_http else "url must use http or https")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("url has no host")
    if parts.fragment:
        raise UnsafeUrl("url must not have a #fragment")
    if allow_private:
        return url
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise UnsafeUrl(f"host {host!r} is a local name")
    for address in resolve(host, port or (443 if parts.scheme == "https" else 80)):
        if _forbidden(address):
            raise UnsafeUrl(f"host {host!r} resolves to {address}, which is not a public address")
    return url
