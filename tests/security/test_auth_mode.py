"""When a process may serve the API without tokens (`service/security/auth_mode.py`), decided at start."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.settings import Settings
from service.security.auth_mode import UnsafeAuthConfig, is_loopback_host, resolve
from service.security.middleware import auth_disabled
from tests.support.auth import ADMIN_TOKEN_HASH


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("example.org", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, local: bool) -> None:
    assert is_loopback_host(host) is local


def test_dev_on_localhost_without_admin_hashes_turns_authentication_off_and_says_so() -> None:
    resolved, lines = resolve(settings(), "127.0.0.1", dev=True)
    assert resolved.auth_disabled is True
    assert any("AUTHENTICATION IS OFF" in line for line in lines)
    assert len(resolved.token_signing_key) >= 32, "company tokens can be tried in dev"


def test_dev_keeps_a_configured_signing_key() -> None:
    resolved, _ = resolve(settings(token_signing_key="k" * 40), "127.0.0.1", dev=True)
    assert resolved.token_signing_key == "k" * 40


def test_admin_hashes_keep_authentication_on_everywhere() -> None:
    for dev in (True, False):
        resolved, lines = resolve(settings(admin_token_hashes=[ADMIN_TOKEN_HASH], auth_disabled=True), "::1", dev=dev)
        assert auth_disabled(resolved) is False and "ignored" in lines[0]


def test_web_turns_authentication_off_only_when_asked_and_on_loopback() -> None:
    assert resolve(settings(), "127.0.0.1", dev=False)[0].auth_disabled is False
    assert resolve(settings(auth_disabled=True), "127.0.0.1", dev=False)[0].auth_disabled is True
    with pytest.raises(UnsafeAuthConfig, match="loopback address only"):
        resolve(settings(auth_disabled=True), "0.0.0.0", dev=False)


def test_dev_bound_beyond_localhost_keeps_authentication_on() -> None:
    resolved, lines = resolve(settings(), "0.0.0.0", dev=True)
    assert resolved.auth_disabled is False
    assert "refuses every request" in lines[0]
