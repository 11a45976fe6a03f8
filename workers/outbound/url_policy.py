"""Where Synctrack may send outbound webhooks: only public unicast addresses, never internal services.

Checked when a subscription is saved and again before deliveries (`check_target`'s addresses are the only ones
connected to). IPv6 is judged by IANA's special-purpose list and ``2000::/3``, not by `ipaddress`, whose answer
changes between Python releases; an IPv6 form of an IPv4 address (mapped, compatible, NAT64, 6to4) is judged as it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from schemas.errors import SynctrackError

MAX_URL_LENGTH = 2048


class UnsafeUrl(SynctrackError, ValueError):
    """Raised when a URL is malformed, not https, or reaches an address that is not public."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address

GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765): the IPv4 address behind it is the translator's to pick
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): where the IPv4 sits depends on the operator's prefix
        "100::/64",  # discard-only (RFC 6666)
        "100:0:0:1::/64",  # dummy prefix (RFC 9780)
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID, AMT, anycast services
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment-routing SIDs (RFC 9602)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
"""IPv6 ranges Synctrack never sends to, whatever an address in them carries."""
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _forbidden_v4(address: ipaddress.IPv4Address) -> bool:
    # `is_global` is False for private, loopback, link-local, shared (100.64/10), reserved and
    # documentation ranges; multicast is not a destination for a POST either.
    return not address.is_global or address.is_multicast


def forbidden(address: Address) -> bool:
    """Whether Synctrack must not connect to `address` (see the module's docstring)."""
    if isinstance(address, ipaddress.IPv4Address):
        return _forbidden_v4(address)
    if any(address in network for network in NOT_PUBLIC_V6):
        return True
    if address.ipv4_mapped is not None:
        return _forbidden_v4(address.ipv4_mapped)
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return _forbidden_v4(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None and _forbidden_v4(address.sixtofour):
        return True
    return address not in GLOBAL_UNICAST


def resolve(host: str, port: int) -> list[Address]:
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


def _parse(url: str, allow_http: bool) -> tuple[str, int]:
    """(host, port) of an acceptable URL; raises UnsafeUrl."""
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
    return host, port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """Return `url` if Synctrack may POST to it, else raise `UnsafeUrl` with the reason: https only unless
    `allow_http`; every address the host resolves to must be public unless `allow_private`."""
    if allow_private:
        _parse(url, allow_http)
    else:
        check_target(url, allow_http=allow_http, allow_private=False)
    return url


def check_target(url: str, *, allow_http: bool, allow_private: bool) -> tuple[Address, ...]:
    """`check_url`, answering with the addresses an attempt may connect to (the host is resolved here, also
    when `allow_private`, and then every address is approved). Raises UnsafeUrl."""
    host, port = _parse(url, allow_http)
    if not allow_private and (host == "localhost" or host.endswith((".localhost", ".local", ".internal"))):
        raise UnsafeUrl(f"host {host!r} is a local name")
    addresses = tuple(resolve(host, port))
    # The answer never names the address: what an internal name resolves to is not for the caller to learn.
    if not allow_private and any(forbidden(address) for address in addresses):
        raise UnsafeUrl(f"host {host!r} is not allowed: not a public address")
    return addresses
