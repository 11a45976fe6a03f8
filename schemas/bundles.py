"""Bundles: named sets of data types a product's reports read together (`SYNCTRACK_BUNDLES`), as the API shows
them (`GET /v1/companies/{company_id}/bundles`), and what a bundle refresh answers."""

from __future__ import annotations

from schemas.actions import ActionOut
from schemas.api import ApiModel, UtcTime

BUNDLE_READY = "bundle.ready"


class BundleOut(ApiModel):
    name: str
    data_types: list[str]
    as_of: UtcTime | None
    """The earliest of the members' latest successful syncs; null unless `complete`."""
    spread_seconds: float | None
    """Latest minus earliest of the members' latest successful syncs; null unless `complete`."""
    stale_data_types: list[str]
    """Members not `fresh` on any Linked connection of the company."""
    complete: bool
    """Every member has a successful sync on a Linked connection."""


class BundleList(ApiModel):
    """`GET /v1/companies/{company_id}/bundles`: every configured bundle, in the order configured."""

    items: list[BundleOut]


class BundleRefreshOut(ApiModel):
    company_id: str
    bundle: str
    requested_at: UtcTime
    data_types: list[str]
    """The members refreshed: those not fresh, or all with `?all=true`."""
    actions: list[ActionOut]
    """One refresh per member data type per Linked connection that has it."""
