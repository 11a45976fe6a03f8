"""Which companies a list or the stream may show the caller: the one place handlers ask.

A company-scoped token's company is compared as one exact id, never parsed as a list filter: a token
is confined to `principal.company_id` and nothing a query string says can widen that. Admins (and the
local developer) filter by `company_id=` as they like, repeated or comma-separated.
"""

from __future__ import annotations

from starlette.requests import Request

from service.common.pagination import list_param
from service.security.middleware import principal_of


def company_filter(request: Request) -> list[str]:
    """The companies to show: exactly the token's one company, or the caller's `company_id=` filter (may be empty)."""
    own = principal_of(request).company_id
    if own is not None:
        return [own]
    return list_param(request, "company_id")
