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
    with pytest.raises(UnsafeUrl, match="10.0.0.1"):
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
