"""Whether a `synctrack dev` or `synctrack web` process may serve the API without tokens, decided at start.

Authentication is off only with no admin token hash configured AND a loopback bind address: `synctrack dev`
turns it off by itself, `synctrack web` only with `SYNCTRACK_AUTH_DISABLED=true`.

Then only this machine's own requests are served, not a web page's that the developer opened
(`check_local_request`): a browser is a loopback peer too, so `Host` must be a loopback name (defeating DNS
rebinding), and a request a browser sends for another site (`Origin`, `Sec-Fetch-Site`) is refused unless that
origin is this server or in `SYNCTRACK_CORS_ORIGINS`. Both answer 403 `forbidden`.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import Scope

from schemas.errors import ApiError, ConfigError, ErrorCode
from schemas.settings import Settings

BANNER = "!" * 78


class UnsafeAuthConfig(ConfigError):
    """Raised when authentication is asked to be off on an address other machines can reach."""


def is_loopback_host(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name of a `Host` value without its port (`[::1]:8000` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def check_local_request(scope: Scope, allowed_origins: Collection[str]) -> None:
    """Raise ApiError 403 unless the request is addressed to a loopback name and not sent by a foreign page."""
    headers = {name: value.decode("latin-1") for name, value in scope.get("headers", [])}
    host = headers.get(b"host", "").strip().lower()
    if not host or not is_loopback_host(host_name(host)):
        raise ApiError(
            403,
            ErrorCode.FORBIDDEN,
            "authentication is off for local development, so only requests to localhost or a loopback "
            "address are served",
        )
    allowed = {f"http://{host}", f"https://{host}"} | {o.rstrip("/").lower() for o in allowed_origins}
    if (origin := headers.get(b"origin")) is not None:
        parsed = urlsplit(origin.strip().lower())
        foreign = f"{parsed.scheme}://{parsed.netloc}" not in allowed or origin.strip().lower() == "null"
    else:
        foreign = headers.get(b"sec-fetch-site", "").strip().lower() == "cross-site"
    if foreign:
        raise ApiError(403, ErrorCode.FORBIDDEN, "cross-site requests are refused while authentication is off")


def resolve(settings: Settings, host: str, *, dev: bool) -> tuple[Settings, list[str]]:
    """The settings to run with, and lines to print at start. Raises UnsafeAuthConfig."""
    if settings.admin_token_hashes:
        ignored = " (SYNCTRACK_AUTH_DISABLED is ignored)" if settings.auth_disabled else ""
        return settings, [f"  auth:     bearer tokens required on /v1/*{ignored}"]
    local = is_loopback_host(host)
    if settings.auth_disabled and not local:
        raise UnsafeAuthConfig(
            f"SYNCTRACK_AUTH_DISABLED=true with --host {host}: authentication can be off on a loopback address only"
        )
    if not (settings.auth_disabled or (dev and local)):
        return settings, [
            "  auth:     ON, but no SYNCTRACK_ADMIN_TOKEN_HASHES are set: /v1/* refuses every request",
            "            without a company token (`synctrack token new` makes an admin token and its hash)",
        ]
    update: dict[str, object] = {"auth_disabled": True}
    lines = [
        BANNER,
        "  AUTHENTICATION IS OFF: every local process can read and change everything via /v1/*.",
        f"  Only loopback clients are served (bound to {host}). Set SYNCTRACK_ADMIN_TOKEN_HASHES to turn it on.",
    ]
    if dev and not settings.token_signing_key:
        update["token_signing_key"] = secrets.token_urlsafe(48)
        lines.append("  Company tokens (POST /v1/tokens) are signed with a key made for this run only.")
    lines.append(BANNER)
    return settings.model_copy(update=update), lines


def for_cli(settings: Settings, host: str, *, dev: bool) -> tuple[Settings, list[str]]:
    """`resolve` for the CLI: an unsafe configuration is printed and the command exits with status 2."""
    import typer

    try:
        return resolve(settings, host, dev=dev)
    except UnsafeAuthConfig as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
