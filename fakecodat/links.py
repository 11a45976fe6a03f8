"""Codat's Link URLs as the fake issues them, and its one-time mode.

A connection's `linkUrl` is `{link_base_url}/companies/{companyId}/connections/{connectionId}/start`.
With `one_time_links` on (in Codat, a Portal setting), every time Codat shows a connection — a `GET`, a
list, a webhook — its `linkUrl` carries a fresh one-time password (`?otp=…`) that works once and
expires after `link_ttl_seconds` (a day), used or not. Opening a link (`GET …/start` on the fake, which
stands in for Codat's Link site when `link_base_url` points at it) spends its otp; a spent, expired or
unknown one is refused, so a stored link can be shown to be dead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fakecodat.webhooks import iso

KEEP_LINKS = 10_000
"""One-time links remembered; an older one is forgotten (and refused as unknown) so a long demo stays small."""


@dataclass
class IssuedLink:
    otp: str
    company_id: str
    connection_id: str
    url: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "otp": self.otp,
            "company_id": self.company_id,
            "connection_id": self.connection_id,
            "url": self.url,
            "issued_at": iso(self.issued_at),
            "expires_at": iso(self.expires_at),
            "used_at": iso(self.used_at) if self.used_at else None,
        }


def start_url(base: str, company_id: str, connection_id: str) -> str:
    """Codat's connection-specific Link URL (without a one-time password)."""
    return f"{base.rstrip('/')}/companies/{company_id}/connections/{connection_id}/start"


class Links:
    """The one-time links issued so far, oldest first."""

    def __init__(self) -> None:
        self.issued: dict[str, IssuedLink] = {}

    def issue(self, base: str, company_id: str, connection_id: str, now: datetime, ttl_seconds: float) -> str:
        """A new one-time link URL for the connection, valid once until `now + ttl_seconds`."""
        otp = secrets.token_urlsafe(16)
        url = f"{start_url(base, company_id, connection_id)}?{urlencode({'otp': otp})}"
        self.issued[otp] = IssuedLink(otp, company_id, connection_id, url, now, now + timedelta(seconds=ttl_seconds))
        for stale in list(self.issued)[: max(0, len(self.issued) - KEEP_LINKS)]:
            del self.issued[stale]
        return url

    def spend(self, company_id: str, connection_id: str, otp: str | None, now: datetime) -> str | None:
        """Use the link: None when `otp` is good for this connection (it is spent now), else why it is refused."""
        link = self.issued.get(otp or "")
        if link is None or (link.company_id, link.connection_id) != (company_id, connection_id):
            return "This link is not valid."
        if link.used_at is not None:
            return "This link has already been used."
        if now >= link.expires_at:
            return "This link has expired."
        link.used_at = now
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [link.describe() for link in self.issued.values()]
