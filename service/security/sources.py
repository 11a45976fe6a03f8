"""Where a request comes from: the peer address, or the client a trusted proxy forwarded for.

`X-Forwarded-For` is read from the right, skipping each hop in `SYNCTRACK_TRUSTED_PROXIES`: the first other address
is the client, anything further left the client wrote itself. Without trusted proxies the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str], setting: str) -> list[Network]:
    """CIDRs (or single addresses) from a setting; raises ValueError naming the setting and the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {value!r} is not an IP address or CIDR network") from None
    return networks


def parse_address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip().split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, networks: list[Network]) -> bool:
    return any(address in net for net in networks)  # an address of the other IP version is in none


class SourceResolver:
    """Resolves a request's source address, honouring `X-Forwarded-For` from trusted proxies only."""

    def __init__(self, trusted_proxies: list[Network]) -> None:
        self.trusted = trusted_proxies

    def source(self, scope: Scope) -> str:
        """The client's address as text (the peer's when it cannot be known better; "" when unknown)."""
        client = scope.get("client")
        forwarded = [value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
        return self.source_of(str(client[0]) if client else "", forwarded)

    def source_of(self, peer: str, forwarded: Iterable[str]) -> str:
        """`source` from its parts: the peer's address and the `X-Forwarded-For` headers, in order."""
        address = parse_address(peer)
        if address is None or not self.trusted or not _within(address, self.trusted):
            return str(address) if address is not None else peer
        hops = [part.strip() for value in forwarded for part in value.split(",")]
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                return hop  # malformed: whoever wrote it is the source, and it matches no network
            if not _within(hop_address, self.trusted):
                return str(hop_address)
            address = hop_address
        return str(address)


def is_within(source: str, networks: list[Network]) -> bool:
    """Whether the source address (as `SourceResolver.source` gives it) lies in one of `networks`."""
    address = parse_address(source)
    return address is not None and _within(address, networks)


def is_loopback(scope: Scope) -> bool:
    """Whether the TCP peer (not any forwarded address) is this machine."""
    peer = str(scope["client"][0]) if scope.get("client") else ""
    address = parse_address(peer)
    return address.is_loopback if address is not None else peer == "localhost"  # a name some servers give


def bucket_key(source: str) -> str:
    """The rate-limit key of a source: IPv6 clients are grouped by /64 (one host usually owns the lot)."""
    address = parse_address(source)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return source
