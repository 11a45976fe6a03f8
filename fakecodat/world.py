"""The fake Codat's state: companies, connections and pull operations, and how they move.

A queued data type goes Queued → Fetching → Complete (or an error status, `failure_rate` of the
time) over `sync_seconds`; when every operation of one read of a connection has finished, a
`read.completed` (`read.completed.initial` for a connection's first read) is sent, stamped with the
completion time. Unlinking sends `connection.disconnected`, deleting sends `connection.deleted`.
A connection can be *held* (`hold`): its pull operations stay at the status held (`Queued`, `Fetching`, …)
until it is released, then finish as usual — as an on-premise connector's datasets wait at Codat while
the connector is offline, or a fetch Codat keeps retrying behind the scenes.
Everything runs on the server's event loop; nothing here is thread-safe, nothing needs to be.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fakecodat.catalog import COMPANY_NAMES, Platform, connection_info, default_connections, new_id, platform
from fakecodat.links import Links, start_url
from fakecodat.sync_settings import SyncSettings
from fakecodat.webhooks import Deliverer, iso

IN_PROGRESS = (
    "Initial",
    "Queued",
    "Fetching",
    "MapQueued",
    "Mapping",
    "ProcessingQueued",
    "Processing",
    "ValidationQueued",
    "Validating",
)


class CodatProblem(Exception):
    """Raised by the world for an answer Codat would give as an error (status, Codat's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Config:
    sync_seconds: float = 2.0
    failure_rate: float = 0.0
    failure_status: str = "FetchError"
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Basic <api_key>``."""
    traffic_every_seconds: float = 0.0
    """When > 0, a random linked connection refreshes a random data type this often (demo traffic)."""
    quota: int = 0
    """When > 0, Codat's request quota per `quota_window_seconds`: every answer carries `X-Rate-Limit-*`,
    and a request beyond the quota is answered 429 with `Retry-After` until the window resets."""
    quota_window_seconds: float = 60.0
    one_time_links: bool = False
    """Codat's one-time Link URLs: each time a connection is shown, its `linkUrl` carries a fresh `?otp=…`
    that works once and expires after `link_ttl_seconds` (`fakecodat.links`)."""
    link_ttl_seconds: float = 86_400.0
    link_base_url: str = "https://link-api.codat.io"
    """Where Link URLs point; the fake's own URL makes them open its link page (`GET …/start`)."""


@dataclass
class World:
    config: Config
    deliverer: Deliverer
    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_company: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each company's pull operations (the history of thousands of companies is read per company)."""
    sync_settings: SyncSettings = field(default_factory=SyncSettings)
    rng: random.Random = field(default_factory=random.Random)
    links: Links = field(default_factory=Links)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _holds_changed: asyncio.Event | None = None
    """Set (and replaced) whenever a connection is held or released, to wake the operations waiting on it."""

    # Lookups -------------------------------------------------------------------------------------

    def company(self, company_id: str) -> dict[str, Any]:
        if company_id not in self.companies:
            raise CodatProblem(404, f"Company with id {company_id} not found")
        return self.companies[company_id]

    def connection(self, company_id: str, connection_id: str) -> dict[str, Any]:
        self.company(company_id)
        conn = self.connections.get(connection_id)
        if conn is None or conn["_company"] != company_id:
            raise CodatProblem(404, f"Data connection {connection_id} not found")
        return conn

    def company_connections(self, company_id: str) -> list[dict[str, Any]]:
        company = self.company(company_id)
        return [self.connections[c] for c in company["_connections"] if c in self.connections]

    def company_operations(self, company_id: str) -> list[dict[str, Any]]:
        self.company(company_id)
        return list(self.by_company.get(company_id, []))

    def listed_companies(self) -> list[dict[str, Any]]:
        """Every company as `GET /companies` shows it: with its `dataConnections`."""
        return [self.listed(company_id) for company_id in self.companies]

    def listed(self, company_id: str) -> dict[str, Any]:
        company = public(self.company(company_id))
        company["dataConnections"] = [self.shown(c) for c in self.company_connections(company_id)]
        return company

    def shown(self, conn: dict[str, Any]) -> dict[str, Any]:
        """The connection as Codat's API and webhooks show it: with one-time links, a fresh `linkUrl`."""
        body = public(conn)
        if self.config.one_time_links:
            ttl = self.config.link_ttl_seconds
            body["linkUrl"] = self.links.issue(self.config.link_base_url, conn["_company"], conn["id"], now(), ttl)
        return body

    def open_link(self, company_id: str, connection_id: str, otp: str | None) -> dict[str, Any]:
        """The customer opened the connection's Link URL and linked it again (the fake skips the sign-in),
        and Codat reads its data. Raises `CodatProblem` (410) for a one-time link that was used, has
        expired or was never issued."""
        conn = self.connection(company_id, connection_id)
        if self.config.one_time_links:
            refused = self.links.spend(company_id, connection_id, otp, now())
            if refused is not None:
                raise CodatProblem(410, refused)
        previous = conn["status"]
        shown = self.set_status(company_id, connection_id, "Linked")
        ops = [self._new_operation(conn, data_type) for data_type in platform(conn["_platform"]).data_types]
        self._start(ops, conn, initial=previous == "PendingAuth")
        return shown

    # Seeding -------------------------------------------------------------------------------------

    def add_company(
        self,
        name: str | None = None,
        platforms: list[str] | None = None,
        *,
        company_id: str | None = None,
        status: str = "Linked",
        announce: bool = True,
        initial_read: bool = True,
        history: int = 0,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        hold: str | None = None,
    ) -> dict[str, Any]:
        """Create a company with one connection per platform; announce it and run the first read.

        `history` gives each connection that many finished pull operations from the last hours, made
        without a webhook: a company whose past only Codat knows (what an import reads). `hold` holds
        every connection from the start (see `hold`)."""
        if hold is not None:
            _check_hold(hold)
        index = len(self.companies)
        name = name or COMPANY_NAMES[index % len(COMPANY_NAMES)]
        ident = company_id or new_id()
        company: dict[str, Any] = {
            "id": ident,
            "name": name,
            "description": description,
            "redirect": f"https://link.codat.io/company/{ident}",
            "lastSync": None,
            "created": iso(now()),
            "tags": tags or {},
            "_connections": [],
        }
        self.companies[company["id"]] = company
        for key in platforms or default_connections(index):
            p = platform(key)
            conn = self._new_connection(company, p, status)
            conn["_hold"] = hold
            if history:
                self._add_history(conn, p, history)
            if announce:
                self._emit_connection("connection.created", conn, status="PendingAuth")
                if status == "Linked":
                    self._emit_connection("connection.connected", conn)
            if initial_read and status == "Linked":
                self._start([self._new_operation(conn, dt) for dt in p.data_types], conn, initial=True)
        return self.describe(company["id"])

    def _new_connection(self, company: dict[str, Any], p: Platform, status: str) -> dict[str, Any]:
        conn_id = new_id()
        conn = {
            "id": conn_id,
            "integrationId": new_id(),
            "integrationKey": p.key,
            "sourceId": new_id(),
            "sourceType": p.source_type,
            "platformName": p.name,
            "linkUrl": start_url(self.config.link_base_url, company["id"], conn_id),
            "status": status,
            "lastSync": None,
            "created": iso(now()),
            "dataConnectionErrors": [],
            "connectionInfo": connection_info(p, company["name"], self.rng),
            "_company": company["id"],
            "_platform": p.key,
        }
        self.connections[conn_id] = conn
        company["_connections"].append(conn_id)
        return conn

    def _add_history(self, conn: dict[str, Any], p: Platform, count: int) -> None:
        """`count` finished pull operations of the connection, one every ten minutes back from now."""
        finished = now()
        for i in range(count):
            op = self._new_operation(conn, p.data_types[i % len(p.data_types)])
            requested = finished - timedelta(minutes=10 * (count - i), seconds=30)
            done = requested + timedelta(seconds=20)
            status = self.config.failure_status if self.rng.random() < self.config.failure_rate else "Complete"
            op.update(
                status=status,
                requested=iso(requested),
                completed=iso(done),
                progress=100,
                isCompleted=status == "Complete",
                isErrored=status != "Complete",
            )
            conn["lastSync"] = iso(done)

    def describe(self, company_id: str) -> dict[str, Any]:
        company = public(self.company(company_id))
        company["connections"] = [public(c) for c in self.company_connections(company_id)]
        return company

    # Actions Codat's API offers ----------------------------------------------------------------------

    def queue(self, company_id: str, data_type: str, connection_id: str | None = None) -> dict[str, Any]:
        """Queue one data type (on one connection, or the first linked one that supports it)."""
        linked = [c for c in self.company_connections(company_id) if c["status"] == "Linked"]
        if connection_id is not None:
            linked = [c for c in linked if c["id"] == connection_id]
            if not linked:
                self.connection(company_id, connection_id)
                raise CodatProblem(400, f"Data connection {connection_id} is not linked")
        if not linked:
            raise CodatProblem(400, f"Company {company_id} has no linked data connection")
        supporting = [c for c in linked if data_type in platform(c["_platform"]).data_types]
        conn = (supporting or linked)[0]
        for op in self.operations.values():
            if op["connectionId"] == conn["id"] and op["dataType"] == data_type and op["status"] in IN_PROGRESS:
                raise CodatProblem(
                    409, f"DatasetAlreadyInProgressException: a dataset of type {data_type} is already in progress"
                )
        op = self._new_operation(conn, data_type)
        self._start([op], conn, initial=False)
        return public(op)

    def refresh_all(self, company_id: str) -> list[dict[str, Any]]:
        """Queue every data type of every linked connection (types already syncing are skipped)."""
        queued: list[dict[str, Any]] = []
        for conn in self.company_connections(company_id):
            if conn["status"] != "Linked":
                continue
            busy = {
                op["dataType"]
                for op in self.operations.values()
                if op["connectionId"] == conn["id"] and op["status"] in IN_PROGRESS
            }
            ops = [self._new_operation(conn, dt) for dt in platform(conn["_platform"]).data_types if dt not in busy]
            if ops:
                self._start(ops, conn, initial=False)
                queued.extend(public(op) for op in ops)
        return queued

    def set_status(self, company_id: str, connection_id: str, status: str, notify: bool = True) -> dict[str, Any]:
        """Change a connection's status as Codat would (unlink, deauthorise, relink)."""
        conn = self.connection(company_id, connection_id)
        previous, conn["status"] = conn["status"], status
        if notify and previous != status:
            if status in ("Unlinked", "Deauthorized"):
                self._emit_connection("connection.disconnected", conn)
            elif status == "Linked":
                self._emit_connection(
                    "connection.reconnected" if previous != "PendingAuth" else "connection.connected", conn
                )
        return self.shown(conn)

    def hold(self, company_id: str, connection_id: str, status: str | None) -> dict[str, Any]:
        """Hold the connection's pull operations at `status` (one of Codat's in-progress statuses) until
        released with None; operations already held take the new status at once."""
        if status is not None:
            _check_hold(status)
        conn = self.connection(company_id, connection_id)
        conn["_hold"] = status
        if self._holds_changed is not None:
            self._holds_changed.set()
            self._holds_changed = None
        return public(conn)

    def delete(self, company_id: str, connection_id: str, notify: bool = True) -> None:
        conn = self.connection(company_id, connection_id)
        del self.connections[connection_id]
        self.companies[company_id]["_connections"].remove(connection_id)
        if notify:
            self._emit_connection("connection.deleted", conn)

    def data_status(self, company_id: str) -> dict[str, Any]:
        latest: dict[str, dict[str, Any]] = {}
        success: dict[str, dict[str, Any]] = {}
        for op in sorted(self.company_operations(company_id), key=lambda o: o["requested"]):
            latest[op["dataType"]] = op
            if op["status"] == "Complete":
                success[op["dataType"]] = op
        return {
            dt: {
                "dataType": dt,
                "currentStatus": op["status"],
                "lastSuccessfulSync": success[dt]["completed"] if dt in success else None,
                "latestSyncId": op["id"],
                "latestSuccessfulSyncId": success[dt]["id"] if dt in success else None,
            }
            for dt, op in latest.items()
        }

    # Pull operations ---------------------------------------------------------------------------------

    def _new_operation(self, conn: dict[str, Any], data_type: str) -> dict[str, Any]:
        op = {
            "id": new_id(),
            "companyId": conn["_company"],
            "connectionId": conn["id"],
            "dataType": data_type,
            "status": "Queued",
            "requested": iso(now()),
            "completed": None,
            "progress": 0,
            "isCompleted": False,
            "isErrored": False,
            "errorMessage": None,
            "statusDescription": None,
        }
        self.operations[op["id"]] = op
        self.by_company.setdefault(op["companyId"], []).append(op)
        return op

    def _start(self, ops: list[dict[str, Any]], conn: dict[str, Any], initial: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._run(ops, conn, initial))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ops: list[dict[str, Any]], conn: dict[str, Any], initial: bool) -> None:
        await asyncio.sleep(self.config.sync_seconds / 3)
        await self._while_held(ops, conn)
        supported = platform(conn["_platform"]).data_types
        for op in ops:
            op["status"], op["progress"] = "Fetching", 40
        await asyncio.sleep(self.config.sync_seconds * 2 / 3)
        await self._while_held(ops, conn)
        finished = now()
        for op in ops:
            if op["dataType"] not in supported:
                op["status"] = "NotSupported"
            elif self.rng.random() < self.config.failure_rate:
                op["status"], op["isErrored"] = self.config.failure_status, True
                op["errorMessage"] = f"{conn['platformName']} answered 502 while fetching {op['dataType']}"
            else:
                op["status"] = "Complete"
            op.update(completed=iso(finished), progress=100, isCompleted=op["status"] == "Complete")
        if conn["id"] in self.connections:
            conn["lastSync"] = iso(finished)
        company = self.companies.get(conn["_company"], {"id": conn["_company"], "name": None})
        payload = {
            "referenceCompany": reference(company),
            "modifiedFromDate": None,
            "dataTypes": [
                {
                    "connectionId": conn["id"],
                    "dataType": op["dataType"],
                    "recordsModified": op["status"] == "Complete",
                    "status": op["status"],
                    "issues": None
                    if not op["errorMessage"]
                    else [{"type": op["status"], "message": op["errorMessage"]}],
                }
                for op in ops
            ],
        }
        self.deliverer.emit("read.completed.initial" if initial else "read.completed", payload, finished)

    async def _while_held(self, ops: list[dict[str, Any]], conn: dict[str, Any]) -> None:
        while conn.get("_hold"):
            for op in ops:
                op["status"] = conn["_hold"]
            if self._holds_changed is None:
                self._holds_changed = asyncio.Event()
            await self._holds_changed.wait()

    def _emit_connection(self, event_type: str, conn: dict[str, Any], status: str | None = None) -> None:
        company = self.companies.get(conn["_company"], {"id": conn["_company"], "name": None})
        body = self.shown(conn) | ({"status": status} if status else {})
        self.deliverer.emit(event_type, {"referenceCompany": reference(company), "connection": body}, now())

    # Demo traffic ----------------------------------------------------------------------------------

    async def traffic(self) -> None:
        """Refresh a random data type of a random linked connection every `traffic_every_seconds`."""
        while True:
            every = self.config.traffic_every_seconds
            await asyncio.sleep(every if every > 0 else 1.0)
            linked = [c for c in self.connections.values() if c["status"] == "Linked"]
            if every <= 0 or not linked:
                continue
            conn = self.rng.choice(linked)
            data_type = self.rng.choice(platform(conn["_platform"]).data_types)
            try:
                self.queue(conn["_company"], data_type, conn["id"])
            except CodatProblem:
                pass

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _check_hold(status: str) -> None:
    if status not in IN_PROGRESS:
        raise CodatProblem(400, f"a connection is held at one of {', '.join(IN_PROGRESS)}, not {status!r}")


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as Codat's API shows it (without the fake's own bookkeeping keys)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def reference(company: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": company["id"],
        "name": company.get("name"),
        "description": company.get("description"),
        "links": {},
        "tags": company.get("tags") or {},
    }
