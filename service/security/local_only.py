"""With authentication off, serve this machine's own requests only — not a web page's that the developer opened.

A browser is a loopback peer too, so `Host` must be a loopback name (defeating DNS rebinding), and a request a
browser sends for another site (`Origin`, `Sec-Fetch-Site`) is refused unless that origin is this server or in
`SYNCTRACK_CORS_ORIGINS`. Both answer 403 `forbidden`."""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import Scope

from schemas.errors import ApiError, ErrorCode
from service.security.auth_mode import is_loopback_host


def host_name(host: str) -> str:
    """The name of a `Host` value without its port (`[::1]:8000` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def check_local_request(scope: Scope, allowed_origins: Collection[str]) -> None:
    """Raise ApiError 403 unless the request is addressed to a loopback name and not sent by a foreign page."""
    headers = {name: value.decode("latin-1") for name, value in scope.get("headers", [])}
    host = headers.get(b"host", "")
    if not host or not is_loopback_host(host_name(host)):
        raise ApiError(
            403,
            ErrorCode.FORBIDDEN,
            "authentication is off for local development, so only requests to localhost or a loopback "
            "address are served",
        )
    origin = headers.get(b"origin")
    own = {f"http://{host.strip().lower()}", f"https://{host.strip().lower()}"}
    allowed = own | {o.rstrip("/").lower() for o in allowed_origins}
    if origin is not None:
        parsed = urlsplit(origin.strip().lower())
        if f"{parsed.scheme}://{parsed.netloc}" not in allowed or origin.strip().lower() == "null":
            raise ApiError(403, ErrorCode.FORBIDDEN, "cross-site requests are refused while authentication is off")
    elif headers.get(b"sec-fetch-site", "").strip().lower() == "cross-site":
        raise ApiError(403, ErrorCode.FORBIDDEN, "cross-site requests are refused while authentication is off")
