"""The companies of a Codat account, as `GET /companies` lists them (paged, `_links.next`).

Reconciliation with `SYNCTRACK_RECONCILE_DISCOVER` visits those the ledger lacks; the import of an
account (`workers.codat.importer`) reads the pages itself, to keep each company's `dataConnections`.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine
from sqlmodel import Session, select

from workers.codat.client import PAGE_SIZE, CodatClient
from workers.ledger.tables import Company


def _ledger_company_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.exec(select(Company.id)).all())


async def listed_companies(client: CodatClient, page_size: int = PAGE_SIZE) -> list[str]:
    """Every company id Codat lists for the account (`GET /companies`, every page)."""
    ids: list[str] = []
    page = 1
    while True:
        listing = await client.list_companies(page, page_size)
        ids.extend(c["id"] for c in listing.results)
        if not listing.has_next:
            return list(dict.fromkeys(ids))
        page += 1


async def discovered_companies(client: CodatClient, engine: Engine) -> list[str]:
    """The companies Codat lists that the ledger has never heard of."""
    known = await asyncio.to_thread(_ledger_company_ids, engine)
    return [c for c in await listed_companies(client) if c not in known]
