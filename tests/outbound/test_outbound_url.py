"""`workers/outbound/url_policy.py`: a subscription cannot aim Synctrack at internal services."""

from __future__ import annotations

import ipaddress

import pytest

from workers.outbound import url_policy as outbound_url
from workers.outbound.url_policy import UnsafeUrl, check_url


def strict(url: str) -> str:
    return check_url(url, allow_http=False, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://172.16.4.1/hook",
        "https://192.168.1.20:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://[::1]/hook",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "https://printer.local/hook",
    ],
)
def test_private_loopback_and_link_local_destinations_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        strict(url)


@pytest.mark.parametrize(
    "url", ["http://93.184.215.14/hook", "ftp://93.184.215.14/x", "93.184.215.14/hook", "https:///x"]
)
def test_only_https_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        strict(url)


def test_a_public_https_address_is_accepted() -> None:
    assert strict("https://93.184.215.14/hooks?x=1") == "https://93.184.215.14/hooks?x=1"


def test_a_name_is_refused_when_any_of_its_addresses_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.1")]
    monkeypatch.setattr(outbound_url, "resolve", lambda host, port: addresses)
    with pytest.raises(UnsafeUrl, match="'hooks.example.com' is not allowed: not a public address$"):
        strict("https://hooks.example.com/x")
    monkeypatch.setattr(outbound_url, "resolve", lambda host, port: addresses[:1])
    assert strict("https://hooks.example.com/x")


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        strict("https://no-such-host.invalid/x")


def test_the_development_settings_allow_http_and_local_receivers() -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_http=True, allow_private=True)
    assert check_url("https://localhost/hook", allow_http=False, allow_private=True)
    with pytest.raises(UnsafeUrl, match="https"):
        check_url("http://127.0.0.1:8080/hook", allow_http=False, allow_private=True)
    with pytest.raises(UnsafeUrl, match="public"):
        check_url("http://127.0.0.1:8080/hook", allow_http=True, allow_private=False)


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.8",
        "::169.254.169.254",
        "64:ff9b::10.0.0.1",  # NAT64 well-known prefix
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::8.8.8.8",  # local-use NAT64: never a destination
        "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
        "2002:7f00:0001::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
        "::ffff:10.0.0.1",
        "fec0::1",  # site-local
        "ff02::1",  # multicast
        "ff0e::1",
        "::",  # unspecified
    ],
)
def test_ipv6_forms_that_embed_an_internal_ipv4_and_non_unicast_ipv6_are_refused(address: str) -> None:
    with pytest.raises(UnsafeUrl, match="not a public address"):
        strict(f"https://[{address}]/hook")


def test_a_name_resolving_to_an_embedded_internal_ipv4_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound_url, "resolve", lambda host, port: [ipaddress.ip_address("64:ff9b::a00:1")])
    with pytest.raises(UnsafeUrl, match="not a public address") as refused:
        strict("https://hooks.example.com/x")
    assert "64:ff9b" not in str(refused.value) and "10.0.0.1" not in str(refused.value)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:0:127.0.0.1",  # IPv4-translated (RFC 2765), whatever it carries
        "::ffff:0:8.8.8.8",
        "100::1",  # discard-only
        "100:0:0:1::1",  # dummy prefix
        "2001:2::1",  # benchmarking
        "2001:3::1",  # AMT, in the IETF protocol assignments
        "2001:10::1",  # ORCHID
        "2001:20::1",  # ORCHIDv2
        "2001:db8::1",  # documentation
        "3fff::1",
        "5f00::1",  # segment-routing SIDs
        "64:ff9b:1::808:808",  # local-use NAT64
        "fc00::1",  # unique local
        "fe80::1%eth0",  # link-local, with a zone
        "4000::1",  # outside the global unicast space
        "::1",
    ],
)
def test_reserved_ipv6_ranges_are_refused_whatever_python_calls_global(address: str) -> None:
    with pytest.raises(UnsafeUrl, match="not a public address"):
        strict(f"https://[{address.replace('%', '%25')}]/hook")


@pytest.mark.parametrize(
    "address", ["2606:4700:4700::1111", "64:ff9b::8.8.8.8", "2002:0808:0808::1", "::8.8.8.8", "::ffff:8.8.8.8"]
)
def test_ipv6_forms_embedding_a_public_ipv4_and_public_ipv6_are_accepted(address: str) -> None:
    assert strict(f"https://[{address}]/hook")
