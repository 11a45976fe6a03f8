"""Which companies a list or the stream may show the caller: the one place handlers ask.

A company-scoped token is confined to its one company, whatever the query says; admins filter by `company_id=`.
"""

from __future__ import annotations

from starlette.requests import Request

from service.common.pagination import list_param
from service.security.middleware import principal_of


def company_filter(request: Request) -> list[str]:
    """Exactly the token's one company, or the caller's `company_id=` filter (may be empty)."""
    own = principal_of(request).company_id
    if own is not None:
        return [own]
    return list_param(request, "company_id")
