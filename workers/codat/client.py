"""The one client for Codat's API: a typed method per call Synctrack makes, each with the retries it may take.

A retry must never double an action: idempotent calls retry on network errors, timeouts, 429 and 5xx; a POST
only when it surely did not reach Codat (no connection) or Codat answered 429/503 before processing it.
`Retry-After` and a spent quota (`workers.codat.quota`) are waited out; every failure becomes a `CodatError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from schemas.codat import CompanyPage, company_page, page_results
from schemas.errors import ErrorCode
from schemas.events import InvalidEnvelope
from schemas.ids import ID_SYNTAX, is_valid_id
from schemas.settings import Settings
from workers.codat.errors import KEY_SETTING, CodatError, map_failure, retry_after_seconds
from workers.codat.quota import QuotaGate
from workers.runtime.metrics import record_codat_call

log = logging.getLogger("synctrack.codat")

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before a single byte of the request reached Codat."""
ANSWERED_BEFORE_PROCESSING = (429, 503)
PAGE_SIZE = 100

Segments = tuple[str, ...]
"""A Codat path as its segments (`("companies", company_id, "dataStatus")`); `path_of` encodes them."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 4
    base_delay: float = 0.25
    """Seconds before the first retry; doubles each attempt, capped at `max_delay`."""
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter: between half and all of ``base * 2**attempt``."""
        ceiling = min(self.max_delay, self.base_delay * (2.0**attempt))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class CodatClient:
    """Codat's API over one pooled `httpx.AsyncClient`. Every method raises `CodatError` on failure."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 15.0,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._key = api_key
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self.quota = QuotaGate(self.policy.max_retry_after, sleep=sleep)
        self.calls = 0
        """Requests sent to Codat by this client (retries included)."""
        self._rng = random.Random()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Basic {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> CodatClient:
        policy = RetryPolicy(settings.codat_max_retries, max_retry_after=settings.codat_max_retry_after_seconds)
        timeout = settings.codat_timeout_seconds
        return cls(settings.codat_base_url, settings.codat_api_key, timeout=timeout, policy=policy, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CodatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def list_companies(self, page: int = 1, page_size: int = PAGE_SIZE) -> CompanyPage:
        """One page (1-based) of the account's companies, each with its `dataConnections`."""
        params = {"page": str(page), "pageSize": str(page_size)}
        response = await self._call("GET", ("companies",), "the companies of the account", params=params)
        try:
            return company_page(response.json(), page, page_size)
        except (ValueError, InvalidEnvelope) as exc:
            detail = f"Codat's list of companies is unreadable: {exc}"
            raise CodatError(502, ErrorCode.CODAT_ERROR, detail, response.status_code) from None

    async def get_company(self, company_id: str) -> dict[str, Any]:
        return await self._get_object(("companies", checked("company id", company_id)), f"company {company_id!r}")

    async def list_connections(self, company_id: str) -> list[dict[str, Any]]:
        """Every connection of a company (pages through Codat's paged list)."""
        path = ("companies", checked("company id", company_id), "connections")
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"page": str(page), "pageSize": str(PAGE_SIZE)}
            results, total = page_results(
                (await self._call("GET", path, f"company {company_id!r}", params=params)).json()
            )
            items.extend(r for r in results if isinstance(r, dict))
            if not results or len(results) < PAGE_SIZE or (total is not None and len(items) >= total):
                return items
            page += 1

    async def get_connection(self, company_id: str, connection_id: str) -> dict[str, Any]:
        _, connection = await self.fetch_connection(company_id, connection_id)
        return connection

    async def fetch_connection(self, company_id: str, connection_id: str) -> tuple[int, dict[str, Any]]:
        """The connection as Codat has it now, and Codat's status. Its `linkUrl` is issued at this moment:
        with one-time Link URLs, a new one-time password each time."""
        return await self._connection_call("GET", company_id, connection_id)

    async def unlink_connection(self, company_id: str, connection_id: str) -> tuple[int, dict[str, Any]]:
        """PATCH status `Unlinked`: Codat deauthorises and keeps the data. Returns (status, connection)."""
        return await self._connection_call("PATCH", company_id, connection_id, json={"status": "Unlinked"})

    async def delete_connection(self, company_id: str, connection_id: str) -> int:
        """DELETE the connection (irreversible). Returns Codat's HTTP status."""
        path = connection_path(company_id, connection_id)
        target = f"connection {connection_id!r} of company {company_id!r}"
        response = await self._call("DELETE", path, target, missing_means_done=True)
        return response.status_code

    async def _connection_call(
        self, method: str, company_id: str, connection_id: str, json: Any = None
    ) -> tuple[int, dict[str, Any]]:
        path = connection_path(company_id, connection_id)
        target = f"connection {connection_id!r} of company {company_id!r}"
        response = await self._call(method, path, target, json=json)
        return response.status_code, self._json_object(response, target)

    async def refresh_all(self, company_id: str) -> tuple[int, list[dict[str, Any]]]:
        """Queue every data type of every connection. Codat answers 204 (no pull operations) or,
        in some versions, the operations it queued. Returns (Codat's status, operations)."""
        path = ("companies", checked("company id", company_id), "data", "all")
        response = await self._call("POST", path, f"company {company_id!r}", idempotent=False)
        if response.status_code == 204 or not response.content:
            return response.status_code, []
        body = _json_or_none(response)
        items = body.get("results") if isinstance(body, dict) else body
        return response.status_code, [item for item in items or [] if isinstance(item, dict)]

    async def refresh_data_type(
        self, company_id: str, data_type: str, connection_id: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Queue one data type; returns (Codat's status, the pull operation)."""
        target = f"data type {data_type!r} of company {company_id!r}"
        params = {"connectionId": checked("connection id", connection_id)} if connection_id else None
        path = ("companies", checked("company id", company_id), "data", "queue", checked("data type", data_type))
        response = await self._call("POST", path, target, idempotent=False, params=params)
        return response.status_code, self._json_object(response, target)

    async def pull_operations(
        self, company_id: str, page: int, page_size: int = PAGE_SIZE
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page (1-based) of the company's pull-operation history, newest first."""
        params = {"page": str(page), "pageSize": str(page_size), "orderBy": "-requested"}
        path = ("companies", checked("company id", company_id), "data", "history")
        response = await self._call("GET", path, f"company {company_id!r}", params=params)
        results, total = page_results(response.json())
        return [r for r in results if isinstance(r, dict)], total

    async def pull_operation(self, company_id: str, dataset_id: str) -> dict[str, Any]:
        path = ("companies", checked("company id", company_id), "data", "history", checked("dataset id", dataset_id))
        return await self._get_object(path, f"pull operation {dataset_id!r} of company {company_id!r}")

    async def data_status(self, company_id: str) -> dict[str, Any]:
        return await self._get_object(
            ("companies", checked("company id", company_id), "dataStatus"), f"company {company_id!r}"
        )

    async def client_sync_settings(self) -> dict[str, Any]:
        """The client's sync settings: `{clientId, settings: [{dataType, syncSchedule, …}], overridesDefaults}`."""
        return await self._get_object(("profile", "syncSettings"), "sync settings of the client")

    async def company_sync_settings(self, company_id: str) -> dict[str, Any]:
        """A company's sync settings: `{companyId, settings: [{dataType, syncSchedule, …}]}`."""
        path = ("companies", checked("company id", company_id), "syncSettings")
        return await self._get_object(path, f"sync settings of company {company_id!r}")

    async def _get_object(self, path: Segments, target: str) -> dict[str, Any]:
        return self._json_object(await self._call("GET", path, target), target)

    def _json_object(self, response: httpx.Response, target: str) -> dict[str, Any]:
        body = _json_or_none(response)
        if not isinstance(body, dict):
            detail = f"Codat's answer for {target} is not a JSON object"
            raise CodatError(502, ErrorCode.CODAT_ERROR, detail, response.status_code)
        return body

    async def _call(
        self,
        method: str,
        segments: Segments,
        target: str,
        *,
        idempotent: bool = True,
        missing_means_done: bool = False,
        params: dict[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        if not self._key:
            raise CodatError(502, ErrorCode.CODAT_AUTH_FAILED, f"{KEY_SETTING} is not set, so Codat cannot be called")
        attempt, outcome_unknown = 0, False
        path = path_of(segments)
        while True:
            await self.quota.wait()
            started = time.monotonic()
            self.calls += 1
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                record_codat_call("timeout" if isinstance(exc, httpx.TimeoutException) else "error")
                sent = not isinstance(exc, NOT_SENT)
                log.warning(
                    "codat_call method=%s path=%s error=%s attempt=%d", method, path, type(exc).__name__, attempt + 1
                )
                if (idempotent or not sent) and attempt < self.policy.max_retries:
                    outcome_unknown = outcome_unknown or sent
                    await self._sleep(self.policy.backoff(attempt, self._rng))
                    attempt += 1
                    continue
                raise self._unreachable(exc, sent, idempotent, attempt + 1) from None
            status = response.status_code
            record_codat_call(status)
            self.quota.note(response)
            ms = (time.monotonic() - started) * 1000
            log.info("codat_call method=%s path=%s status=%d attempt=%d ms=%d", method, path, status, attempt + 1, ms)
            if status < 400:
                return response
            if status == 404 and missing_means_done and outcome_unknown:
                return response
            wait = self._retry_wait(response, idempotent, attempt)
            if wait is None:
                raise map_failure(response, target, attempt + 1)
            outcome_unknown = outcome_unknown or status not in ANSWERED_BEFORE_PROCESSING
            await self._sleep(wait)
            attempt += 1

    def _retry_wait(self, response: httpx.Response, idempotent: bool, attempt: int) -> float | None:
        """Seconds to wait before retrying `response`, or None when it must not be retried."""
        status = response.status_code
        retryable = status in ANSWERED_BEFORE_PROCESSING or (idempotent and status >= 500)
        if not retryable or attempt >= self.policy.max_retries:
            return None
        if status in ANSWERED_BEFORE_PROCESSING:
            asked = retry_after_seconds(response)
            if asked is not None:
                return asked if asked <= self.policy.max_retry_after else None
        return self.policy.backoff(attempt, self._rng)

    def _unreachable(self, exc: httpx.TransportError, sent: bool, idempotent: bool, attempts: int) -> CodatError:
        what = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
        detail = f"Codat {what} ({type(exc).__name__}) after {attempts} attempt(s)"
        if sent and not idempotent:
            detail += "; the request may have been taken: reconciliation will record whatever Codat did"
        return CodatError(503, ErrorCode.CODAT_UNAVAILABLE, detail, None, {"Retry-After": "5"})


@asynccontextmanager
async def codat_client(settings: Settings, client: CodatClient | None = None) -> AsyncIterator[CodatClient]:
    """`client` as it is, or (None) a client from `settings`, closed on exit."""
    if client is not None:
        yield client
        return
    async with CodatClient.from_settings(settings) as owned:
        yield owned


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def checked(what: str, value: str) -> str:
    """`value` when it has the one id syntax (`schemas.ids`), which every id Synctrack puts in a Codat path
    must have; else raises `CodatError` 400 `invalid_parameter`, and nothing is sent to Codat."""
    if not is_valid_id(value):
        detail = f"{what} {value!r} is not a Codat id ({ID_SYNTAX}); Codat was not called"
        raise CodatError(400, ErrorCode.INVALID_PARAMETER, detail)
    return value


def connection_path(company_id: str, connection_id: str) -> Segments:
    return ("companies", checked("company id", company_id), "connections", checked("connection id", connection_id))


def path_of(segments: Segments) -> str:
    """The path of a Codat call, each segment percent-encoded whole: no value can add a segment, a query, a
    `..` or a control character to the request Synctrack sends with the account's key."""
    return "".join("/" + (quote(part, safe="") if part not in (".", "..") else "%2E" * len(part)) for part in segments)
