"""Synthetic Codat platforms, companies and connections: realistic names, data types and metadata."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

ACCOUNTING_TYPES = (
    "invoices",
    "bills",
    "bankAccounts",
    "chartOfAccounts",
    "customers",
    "suppliers",
    "payments",
    "journalEntries",
    "balanceSheet",
    "profitAndLoss",
    "company",
    "taxRates",
)
BANKING_TYPES = ("banking-accounts", "banking-transactions", "banking-accountBalances")
COMMERCE_TYPES = ("commerce-orders", "commerce-customers", "commerce-products", "commerce-payments")


@dataclass(frozen=True, slots=True)
class Platform:
    key: str
    """Codat's `integrationKey` (also called platform key)."""
    name: str
    source_type: str
    data_types: tuple[str, ...]
    currency: str


PLATFORMS: dict[str, Platform] = {
    p.key: p
    for p in (
        Platform("gbol", "Xero", "Accounting", ACCOUNTING_TYPES, "GBP"),
        Platform("qhyg", "QuickBooks Online", "Accounting", ACCOUNTING_TYPES, "USD"),
        Platform("tgff", "Sage Business Cloud Accounting", "Accounting", ACCOUNTING_TYPES, "GBP"),
        Platform("nxwl", "HSBC", "Banking", BANKING_TYPES, "GBP"),
        Platform("dfxm", "Lloyds Bank", "Banking", BANKING_TYPES, "GBP"),
        Platform("tfdl", "Shopify", "Commerce", COMMERCE_TYPES, "USD"),
    )
}
PLATFORM_ALIASES = {p.name.lower().split()[0]: p.key for p in PLATFORMS.values()} | {
    "quickbooks": "qhyg",
    "sage": "tgff",
}

COMPANY_NAMES = (
    "Toft Stores",
    "Harbour & Finch Bakery",
    "Larkspur Joinery",
    "Northgate Cycles",
    "Blue Heron Coffee",
    "Marlow Print Works",
    "Oak Lane Veterinary",
    "Cinder Street Brewing",
)


def platform(name_or_key: str) -> Platform:
    """A platform by key (`gbol`) or name (`xero`, `QuickBooks Online`); raises KeyError if unknown."""
    text = name_or_key.strip()
    if text in PLATFORMS:
        return PLATFORMS[text]
    lowered = text.lower()
    for candidate in PLATFORMS.values():
        if candidate.name.lower() == lowered:
            return candidate
    return PLATFORMS[PLATFORM_ALIASES[lowered.split()[0]]]


def connection_info(p: Platform, company_name: str, rng: random.Random) -> dict[str, Any]:
    """What Codat puts in `connectionInfo`: a bank account's currency, an organisation's name…"""
    if p.source_type == "Banking":
        return {
            "currency": p.currency,
            "accountName": f"{company_name} Business Current Account",
            "sortCode": f"40-{rng.randint(10, 99)}-{rng.randint(10, 99)}",
            "accountNumberLast4": f"{rng.randint(0, 9999):04d}",
        }
    if p.source_type == "Commerce":
        slug = company_name.lower().replace(" & ", "-").replace(" ", "-")
        return {"currency": p.currency, "shopDomain": f"{slug}.myshopify.com"}
    return {"baseCurrency": p.currency, "organisationName": company_name, "financialYearEnd": "03-31"}


def new_id() -> str:
    return str(uuid.uuid4())


def default_connections(index: int) -> list[str]:
    """Platforms for the `index`-th synthetic company: a mix of accounting, banking and commerce."""
    mixes = (["gbol", "nxwl"], ["qhyg", "tfdl"], ["tgff"], ["gbol", "dfxm", "tfdl"], ["nxwl"])
    return mixes[index % len(mixes)]
