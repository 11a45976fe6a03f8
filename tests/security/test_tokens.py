"""Tokens on their own (`service/security/tokens.py`) and the `synctrack token` commands."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest
from typer.testing import CliRunner, Result

from service.cli import tokens as token_cli
from service.security.tokens import (
    AdminTokens,
    Authenticator,
    InvalidToken,
    TokenConfigError,
    TokenSigner,
    hash_token,
    new_admin_token,
)
from tests.support.auth import ADMIN_TOKEN, ADMIN_TOKEN_HASH, SIGNING_KEY, company_token
from tests.support.services import run_cli

NOW = 1_800_000_000.0


def authenticator(hashes: list[str] | None = None, key: str = SIGNING_KEY) -> Authenticator:
    return Authenticator(AdminTokens(hashes if hashes is not None else [ADMIN_TOKEN_HASH]), TokenSigner(key))


def test_a_configured_admin_token_is_an_admin_and_its_subject_never_shows_the_token() -> None:
    principal = authenticator().principal(ADMIN_TOKEN, NOW)
    assert principal.is_admin and principal.kind == "admin"
    assert ADMIN_TOKEN not in principal.subject
    assert principal.subject == f"admin:{ADMIN_TOKEN_HASH.removeprefix('sha256:')[:8]}"


def test_any_of_several_admin_hashes_matches_and_other_tokens_do_not() -> None:
    other = new_admin_token()
    auth = authenticator([hash_token(other), ADMIN_TOKEN_HASH])
    assert auth.principal(other, NOW).is_admin
    assert auth.principal(ADMIN_TOKEN, NOW).is_admin
    with pytest.raises(InvalidToken, match="not a known admin token"):
        auth.principal(ADMIN_TOKEN + "x", NOW)


def test_no_admin_hashes_means_no_admin_token_is_accepted() -> None:
    with pytest.raises(InvalidToken):
        authenticator([]).principal(ADMIN_TOKEN, NOW)


@pytest.mark.parametrize("entry", ["sha256:abc", "md5:" + "0" * 64, ADMIN_TOKEN, "sha256:" + "g" * 64])
def test_a_malformed_hash_setting_is_refused_at_start(entry: str) -> None:
    with pytest.raises(TokenConfigError, match="synctrack token hash"):
        AdminTokens([entry])


def test_a_company_token_carries_its_company_and_rights_until_it_expires() -> None:
    token = company_token("co-1", ["read", "refresh"], ttl_seconds=600, now=NOW)
    principal = authenticator().principal(token, NOW + 599)
    assert (principal.company_id, principal.rights, principal.is_admin) == (
        "co-1",
        frozenset({"read", "refresh"}),
        False,
    )
    assert principal.can("refresh") and not principal.can("delete")
    with pytest.raises(InvalidToken, match="expired"):
        authenticator().principal(token, NOW + 600)


def test_a_tampered_company_token_is_rejected() -> None:
    token = company_token("co-1", ["read"], now=NOW)
    prefix, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["cid"], payload["r"] = "co-2", ["read", "delete"]
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(InvalidToken, match="signature does not match"):
        authenticator().principal(f"{prefix}.{forged}.{signature}", NOW)
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken, match="signature does not match"):
        authenticator().principal(f"{prefix}.{body}.{flipped}", NOW)


def test_a_token_signed_with_another_key_is_rejected() -> None:
    token = company_token("co-1", key="another-signing-key-0123456789abcdefghij", now=NOW)
    with pytest.raises(InvalidToken, match="signature"):
        authenticator().principal(token, NOW)


@pytest.mark.parametrize("token", ["st1.", "st1.abc", "st1..sig", "st1.!!!.x", "x" * 5000])
def test_malformed_tokens_are_rejected_with_a_sentence(token: str) -> None:
    with pytest.raises(InvalidToken):
        authenticator().principal(token, NOW)


def test_without_a_signing_key_company_tokens_are_neither_minted_nor_accepted() -> None:
    with pytest.raises(TokenConfigError, match="SYNCTRACK_TOKEN_SIGNING_KEY"):
        TokenSigner("").mint("co-1", ["read"], 60, NOW)
    with pytest.raises(InvalidToken, match="SYNCTRACK_TOKEN_SIGNING_KEY"):
        authenticator(key="").principal(company_token("co-1", now=NOW), NOW)


def test_a_short_signing_key_is_refused() -> None:
    with pytest.raises(TokenConfigError, match="at least 32"):
        TokenSigner("too-short")


def test_unknown_rights_cannot_be_minted() -> None:
    with pytest.raises(ValueError, match="unknown rights"):
        TokenSigner(SIGNING_KEY).mint("co-1", ["read", "admin"], 60, NOW)


def synctrack(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, in a subprocess."""
    return run_cli(["token", *args], env or {}, timeout=60, stdin=stdin)


def token_command(*args: str, env: dict[str, str] | None = None) -> Result:
    """The same commands in this process (typer's runner), for the cases one subprocess already covers."""
    return CliRunner().invoke(token_cli.app, list(args), env=env)


def test_token_hash_prints_the_hash_of_a_token_read_from_stdin() -> None:
    done = synctrack("hash", stdin=ADMIN_TOKEN + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ADMIN_TOKEN_HASH
    assert ADMIN_TOKEN not in done.stdout + done.stderr


def test_token_hash_refuses_a_short_token() -> None:
    done = CliRunner().invoke(token_cli.app, ["hash"], input="password123\n")
    assert done.exit_code == 2
    assert "at least 32" in done.stderr and done.stdout == ""


def test_token_new_prints_a_token_on_stdout_and_its_hash_on_stderr() -> None:
    done = token_command("new")
    token = done.stdout.strip()
    assert done.exit_code == 0 and token.startswith("sta_") and len(token) >= 40
    assert hash_token(token) in done.stderr


def test_token_mint_makes_a_company_token_the_server_accepts() -> None:
    env = {"SYNCTRACK_TOKEN_SIGNING_KEY": SIGNING_KEY}
    done = token_command("mint", "--company", "co-9", "--ttl", "2h", "--rights", "read,refresh", env=env)
    assert done.exit_code == 0, done.stderr
    principal = authenticator().principal(done.stdout.strip(), time.time() + 7000)
    assert (principal.company_id, principal.rights) == ("co-9", frozenset({"read", "refresh"}))
    with pytest.raises(InvalidToken, match="expired"):
        authenticator().principal(done.stdout.strip(), time.time() + 7300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rights", "read,admin"], "rights are among"),
        (["--ttl", "soon"], "not a duration"),
        (["--ttl", "30d"], "at most"),
    ],
)
def test_token_mint_refuses_bad_input(args: list[str], message: str) -> None:
    env = {"SYNCTRACK_TOKEN_SIGNING_KEY": SIGNING_KEY}
    done = token_command("mint", "--company", "co-9", *args, env=env)
    assert done.exit_code == 2 and message in done.stderr and done.stdout == ""


def test_token_mint_without_a_signing_key_says_which_setting_is_missing() -> None:
    done = token_command("mint", "--company", "co-9", env={"SYNCTRACK_TOKEN_SIGNING_KEY": ""})
    assert done.exit_code == 2 and "SYNCTRACK_TOKEN_SIGNING_KEY" in done.stderr
