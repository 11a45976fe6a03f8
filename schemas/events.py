"""Codat's two webhook envelope generations, normalised once into one `Event`.

Current envelope: ``{id, eventType, generatedDate, payload}``; legacy rule alerts: ``{AlertId, RuleType, CompanyId,
DataConnectionId, Data, ...}``. Everything after this module sees only `Event` (facts about companies, connections
and syncs, stamped with Codat's time); actions and reconciliation build it too, so the ledger has one set of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from schemas import ignored, normalise, storable
from schemas.errors import SynctrackError
from schemas.json_codec import loads
from schemas.statuses import CONNECTION_STATUSES

Source = Literal["webhook", "action", "reconcile"]

CONNECTION_EVENT_STATUS = {
    "connection.created": "PendingAuth",
    "connection.connected": "Linked",
    "connection.reconnected": "Linked",
    "connection.disconnected": "Unlinked",
}
"""Status implied by a connection event whose payload does not say it."""

EXPECTS_READ = {"connection.connected", "connection.reconnected"}
"""Connection events after which Codat starts a read: Synctrack records an active sync."""

LEGACY_TYPES = {
    "DataConnectionStatusChanged",
    "New company synchronised",
    "New company synchronized",
    "Data sync completed",
    "Dataset data changed",
    "Data Sync Status Changed To Error",
    "Sync Connection Deleted",
    *ignored.LEGACY,
}

ANY_DATA_TYPE = "*"


class InvalidEnvelope(SynctrackError, ValueError):
    """Raised when a body is JSON but neither envelope generation: the reason says what is missing."""


class UnstorableText(InvalidEnvelope):
    """Raised when a body holds text no ledger database can store (`schemas.storable`): the event is kept with that
    text escaped and never folded."""


LINK_FAILED = "connection.failed"
INITIAL_READ = "read.completed.initial"
COMPANY_EVENTS = ("company.created", "company.deleted")
READ_RESULT_KEYS = ("connectionId", "dataType", "status")


@dataclass(frozen=True, slots=True)
class LinkFailure:
    """Why a link attempt failed (`connection.failed`): its first active `dataConnectionErrors` entry, else its
    first entry; every field None when Codat gave no entry."""

    status_code: str | None = None
    status_text: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionFacts:
    """What an event says about one connection; `None` means "not said"."""

    id: str
    status: str | None = None
    platform_key: str | None = None
    platform_name: str | None = None
    source_type: str | None = None
    link_url: str | None = None
    created_at: datetime | None = None
    errors: tuple[dict[str, Any], ...] | None = None
    metadata: dict[str, Any] | None = None
    deleted: bool = False
    link_failure: LinkFailure | None = None
    """Set by `connection.failed` only: a link attempt of this connection failed at the event's time."""
    linked: bool = False
    """The connection became Linked at the event's time: a reconnect starts its health afresh."""


@dataclass(frozen=True, slots=True)
class SyncFact:
    """One sync of one data type: requested (phase active) or finished, as the event reports it."""

    connection_id: str
    data_type: str
    status: str
    key: str
    """Stable identity of the sync: Codat's dataset id when known, else derived from the event."""
    requested_at: datetime | None = None
    records_modified: bool | None = None
    issues: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A normalised Codat event (or an action/reconciliation finding) ready to fold."""

    id: str
    event_type: str
    generated_at: datetime
    company_id: str | None = None
    company_name: str | None = None
    connections: tuple[ConnectionFacts, ...] = ()
    syncs: tuple[SyncFact, ...] = ()
    source: Source = "webhook"
    known: bool = True
    """False for events that change nothing in the ledger: stored (outcome `ignored`), never folded."""
    reason: str | None = None
    """Why an event that is not `known` changes nothing (stored as its `error`)."""
    company_description: str | None = None
    company_tags: dict[str, Any] | None = None
    """With `company_name` and `company_description`, the company as Codat sent it: the three win or lose together."""
    company_deleted: bool = False
    """`company.deleted`: the company and every connection of it are deleted as of `generated_at`."""
    initial_read: bool = False
    """`read.completed.initial`: each connection its `syncs` name finished its first read."""

    @property
    def connection_ids(self) -> list[str]:
        return sorted({c.id for c in self.connections} | {s.connection_id for s in self.syncs})


def parse_time(value: object) -> datetime:
    """Parse Codat's ISO 8601 time into an aware UTC datetime (a time without offset is UTC)."""
    if not isinstance(value, str) or not value:
        raise InvalidEnvelope(f"expected an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # An offset can push a time at the edge of the calendar out of it (9999-12-31T23:59-01:00).
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidEnvelope(f"expected an ISO 8601 time, got {value!r}") from exc


def optional_time(value: object) -> datetime | None:
    """`parse_time` of a time Codat may leave out or garble: None then."""
    try:
        return parse_time(value) if value else None
    except InvalidEnvelope:
        return None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a webhook body says of itself, in either generation: enough to accept, index and list it."""

    event_type: str
    envelope_id: str
    """`id` of a current envelope, `AlertId` of a legacy alert."""
    company_id: str | None
    connection_id: str | None
    """The connection a connection event names, or a read's first result's; None where not said."""
    generated_at: datetime | None = None
    """`generatedDate` of a current envelope; None for a legacy alert."""


def read_envelope(body: object) -> Envelope:
    """Check that `body` (decoded JSON) is a Codat envelope of either generation and read what it says of itself;
    raises `InvalidEnvelope` saying what is missing. The payload is read leniently here, in full by `parse_event`."""
    if not isinstance(body, dict):
        raise InvalidEnvelope("the body must be a JSON object")
    if "eventType" in body:
        event_type = body["eventType"]
        if not isinstance(event_type, str) or not event_type:
            raise InvalidEnvelope("eventType must be a non-empty string")
        if not isinstance(body.get("id"), str):
            raise InvalidEnvelope("a current envelope needs a string id")
        generated_at = parse_time(body.get("generatedDate"))
        payload = body.get("payload", {})
        if not isinstance(payload, dict):
            raise InvalidEnvelope("payload must be an object")
        company = normalise.mapping(payload.get("referenceCompany"))
        if company is None and event_type.startswith("company."):
            company = payload  # in company events the payload is the company itself
        connection = normalise.text((normalise.mapping(payload.get("connection")) or {}).get("id"))
        items = payload.get("dataTypes")
        if connection is None and isinstance(items, list) and items and isinstance(items[0], dict):
            connection = normalise.text(items[0].get("connectionId"))
        company_id = normalise.text((company or {}).get("id")) or normalise.text(payload.get("companyId"))
        return Envelope(event_type, body["id"], company_id, connection, generated_at)
    if "RuleType" in body:
        if not isinstance(body["RuleType"], str) or not isinstance(body.get("AlertId"), str):
            raise InvalidEnvelope("a legacy alert needs string RuleType and AlertId")
        data = normalise.mapping(body.get("Data")) or {}
        connection = normalise.text(body.get("DataConnectionId")) or normalise.text(data.get("dataConnectionId"))
        return Envelope(body["RuleType"], body["AlertId"], normalise.text(body.get("CompanyId")), connection)
    raise InvalidEnvelope("expected a Codat envelope: {id, eventType, generatedDate, payload} or a legacy alert")


def summarise(raw: Any) -> Envelope | None:
    """`read_envelope` of a decoded body, or None when it is no envelope: never raises."""
    try:
        return read_envelope(raw)
    except (InvalidEnvelope, RecursionError):
        return None


def summarise_body(body: str) -> Envelope | None:
    """`summarise` of a body not decoded yet; None when it is not JSON."""
    try:
        return summarise(loads(body))
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A body already decoded from JSON, for `parse_event` (the worker decodes each body once)."""

    value: Any
    text: str | bytes | None = None
    """The JSON it was decoded from, if at hand: it spares the walk for unstorable text."""


def parse_event(raw: bytes | str | Decoded, message_id: str, received_at: datetime) -> Event:
    """Normalise one stored webhook body. Raises `InvalidEnvelope` for input the fold cannot use, and its
    `UnstorableText` for text the ledger cannot store, wherever in the body it is."""
    if isinstance(raw, Decoded):
        body, text = raw.value, raw.text
    else:
        try:
            body, text = loads(raw), raw
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidEnvelope(f"not JSON: {exc}") from exc
    if (where := storable.unstorable_at(body, text)) is not None:
        raise UnstorableText(
            f"{where}, text the ledger cannot store (PostgreSQL refuses NUL characters and UTF-8 cannot encode a "
            "lone surrogate): the body is kept with it escaped, and the event is not folded"
        )
    envelope = read_envelope(body)
    if envelope.generated_at is not None:
        return _parse_current(body, message_id, envelope.generated_at)
    return _parse_legacy(body, envelope, message_id, received_at)


def _link_failure(errors: tuple[dict[str, Any], ...] | None) -> LinkFailure:
    entries = errors or ()
    entry = next((e for e in entries if normalise.is_active_error(e)), entries[0] if entries else {})
    return LinkFailure(
        status_code=normalise.status_code(entry.get("statusCode")),
        status_text=normalise.text(entry.get("statusText")),
        message=normalise.text(entry.get("errorMessage")),
    )


def connection_facts(raw: object, event_type: str | None = None) -> ConnectionFacts:
    """Read a connection object of Codat's API, or the `payload.connection` of a webhook of `event_type`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        what = f"{event_type} needs payload.connection" if event_type else "a connection must be a JSON object"
        raise InvalidEnvelope(f"{what} with a string id")
    status = raw.get("status")
    if status not in CONNECTION_STATUSES:
        status = CONNECTION_EVENT_STATUS.get(event_type or "")
    errors = normalise.connection_errors(raw.get("dataConnectionErrors"))
    return ConnectionFacts(
        id=raw["id"],
        status=status,
        platform_key=normalise.text(raw.get("integrationKey")) or normalise.text(raw.get("platformKey")),
        platform_name=normalise.text(raw.get("platformName")),
        source_type=normalise.text(raw.get("sourceType")),
        link_url=normalise.text(raw.get("linkUrl")),
        created_at=optional_time(raw.get("created")),
        errors=errors,
        metadata=normalise.mapping(raw.get("connectionInfo")),
        deleted=event_type == "connection.deleted",
        link_failure=_link_failure(errors) if event_type == LINK_FAILED else None,
        linked=event_type in EXPECTS_READ and status == "Linked",
    )


def _expected_read(message_id: str, connection_id: str, at: datetime) -> tuple[SyncFact, ...]:
    """The read Codat starts once a connection is Linked, of every data type."""
    return (SyncFact(connection_id, ANY_DATA_TYPE, "Queued", f"{message_id}:{connection_id}:*", requested_at=at),)


def _parse_current(body: dict[str, Any], message_id: str, generated_at: datetime) -> Event:
    event_type: str = body["eventType"]
    payload = body.get("payload") or {}
    company = payload.get("referenceCompany")
    if company is None and event_type in COMPANY_EVENTS:
        company = payload  # in company events the payload is the company itself
    company = company or {}
    if not isinstance(company, dict):
        raise InvalidEnvelope("payload.referenceCompany must be an object")
    name = normalise.text(company.get("name"))
    event = Event(
        message_id,
        event_type,
        generated_at,
        company_id=normalise.text(company.get("id")) or normalise.text(payload.get("companyId")),
        company_name=name,
        company_description=normalise.text(company.get("description")) if name else None,
        company_tags=normalise.mapping(company.get("tags")) if name else None,
    )
    if event_type.startswith("connection."):
        facts = connection_facts(payload.get("connection"), event_type)
        syncs = _expected_read(message_id, facts.id, generated_at) if event_type in EXPECTS_READ else ()
        return replace(event, connections=(facts,), syncs=syncs)
    if event_type in ("read.completed", INITIAL_READ):
        items = payload.get("dataTypes")
        if not isinstance(items, list):
            raise InvalidEnvelope(f"{event_type} needs payload.dataTypes as a list")
        if not all(isinstance(i, dict) and all(isinstance(i.get(k), str) for k in READ_RESULT_KEYS) for i in items):
            raise InvalidEnvelope("each of payload.dataTypes needs connectionId, dataType and status")
        syncs = tuple(
            SyncFact(
                connection_id=item["connectionId"],
                data_type=item["dataType"],
                status=item["status"],
                key=f"{message_id}:{item['connectionId']}:{item['dataType']}",
                records_modified=normalise.flag(item.get("recordsModified")),
                issues=normalise.issues(item.get("issues")),
            )
            for item in items
        )
        return replace(event, syncs=syncs, initial_read=event_type == INITIAL_READ)
    if event_type in COMPANY_EVENTS:
        if not event.company_id:
            raise InvalidEnvelope(f"{event_type} needs the company (payload.id) with a string id")
        return replace(event, company_deleted=event_type == "company.deleted")
    return replace(event, known=False, reason=ignored.current_reason(event_type))


def _parse_legacy(body: dict[str, Any], envelope: Envelope, message_id: str, received_at: datetime) -> Event:
    # Legacy alerts carry no generation time: the first receipt time stands in for it, and is
    # stored, so a replay folds the event at the same moment.
    rule, connection_id = envelope.event_type, envelope.connection_id
    data = body.get("Data") or {}
    if not isinstance(data, dict):
        raise InvalidEnvelope("Data must be an object")
    event = Event(message_id, rule, received_at, company_id=envelope.company_id)
    if rule == "DataConnectionStatusChanged":
        status = data.get("newStatus")
        if not isinstance(connection_id, str) or status not in CONNECTION_STATUSES:
            raise InvalidEnvelope("DataConnectionStatusChanged needs DataConnectionId and a known newStatus")
        platform_key = normalise.text(data.get("platformKey"))
        facts = ConnectionFacts(connection_id, status, platform_key, linked=status == "Linked")
        syncs = _expected_read(message_id, connection_id, received_at) if status == "Linked" else ()
        return replace(event, connections=(facts,), syncs=syncs)
    if rule in ("Data sync completed", "Data Sync Status Changed To Error", "Dataset data changed"):
        data_type = data.get("dataType")
        if not isinstance(connection_id, str) or not isinstance(data_type, str):
            raise InvalidEnvelope(f"{rule!r} needs DataConnectionId and Data.dataType")
        dataset_id = data.get("datasetId")
        key = dataset_id if isinstance(dataset_id, str) else f"{message_id}:{connection_id}:{data_type}"
        status = data.get("datasetStatus") if rule == "Data Sync Status Changed To Error" else "Complete"
        status = status if isinstance(status, str) else "InternalError"
        changed = True if rule == "Dataset data changed" else None
        return replace(event, syncs=(SyncFact(connection_id, data_type, status, key, records_modified=changed),))
    if rule == "Sync Connection Deleted":
        if connection_id is None:
            return replace(event, known=False, reason=ignored.SYNC_CONNECTION_DELETED)
        return replace(event, connections=(ConnectionFacts(id=connection_id, deleted=True),))
    if rule in ("New company synchronised", "New company synchronized"):
        if event.company_id:
            return event  # records the company
        return replace(event, known=False, reason="a new-company alert without a CompanyId: it names no company")
    return replace(event, known=False, reason=ignored.legacy_reason(rule))
