"""`POST /webhooks/codat`: verify, check, de-duplicate, enqueue — then answer.

The order of checks is cheapest first and never trusts the body before the signature: media type,
signature headers, size (while reading — a huge body is never held in memory), timestamp, signature
over the raw bytes (`service/ingest/signature.py`: nothing decodes the body before it), UTF-8, JSON,
envelope shape. Only then is the event handed to `WebhookQueue`, and the answer (202 accepted / 200
duplicate) is given after Redis has it.

This is the hottest code of the web process, so it works on the ASGI scope and messages directly: the
headers it needs are picked out in one pass (`WebhookHeaders`), the body is read from `receive` under
one deadline, and the answer is two ASGI messages (`service/ingest/guard.py` sends them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, read_envelope
from service.ingest.enqueue import QueueUnavailable, WebhookQueue
from service.ingest.signature import SignatureKeys

log = logging.getLogger("synctrack.receiver")

TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
RETRY_AFTER_SECONDS = "5"
HEADER_FAMILIES = ("svix", "webhook")
"""Svix's own header names win when both families are present, as Svix's library does."""
SIGNATURE_HEADERS = tuple(
    tuple(f"{family}-{part}".encode() for part in ("id", "timestamp", "signature")) for family in HEADER_FAMILIES
)
"""(id, timestamp, signature) header names of each family, in order of preference."""
WANTED_HEADERS = frozenset(
    {b"content-type", b"content-length", b"x-forwarded-for"} | {name for names in SIGNATURE_HEADERS for name in names}
)


@dataclass(slots=True)
class WebhookHeaders:
    """The headers the webhook route reads, picked out of the scope in one pass.

    For a repeated header the first occurrence counts (as Starlette's `Headers.get` reads it), except
    `X-Forwarded-For`, whose occurrences are all kept in order: each proxy may have added its own.
    """

    values: dict[bytes, str]
    forwarded: tuple[str, ...]

    @classmethod
    def of(cls, scope: Scope) -> WebhookHeaders:
        values: dict[bytes, str] = {}
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name in WANTED_HEADERS:
                if name == b"x-forwarded-for":
                    forwarded.append(value.decode("latin-1"))
                elif name not in values:
                    values[name] = value.decode("latin-1")
        return cls(values, tuple(forwarded))

    def get(self, name: bytes) -> str | None:
        return self.values.get(name)


@dataclass(frozen=True, slots=True)
class Signed:
    """What the signature headers claim: the message id, its timestamp and the signatures."""

    msg_id: str
    timestamp: str
    signature: str


@dataclass(frozen=True, slots=True)
class Answer:
    """The receiver's answer to a webhook it took: 202 if enqueued now, 200 if seen before."""

    status: int
    body: bytes
    event_type: str

    @property
    def result(self) -> str:
        return "accepted" if self.status == 202 else "duplicate"


class Refused(ApiError):
    """Raised when a webhook is refused after its event type is known (the queue was unavailable): an `ApiError`
    that also carries the type, which labels the refusal's counter."""

    def __init__(self, error: ApiError, event_type: str) -> None:
        super().__init__(error.status, error.code, error.detail, error.headers)
        self.event_type = event_type


def check_media_type(headers: WebhookHeaders) -> None:
    content_type = (headers.get(b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "webhooks must be sent as application/json")


def signature_headers(headers: WebhookHeaders) -> Signed:
    for id_name, timestamp_name, signature_name in SIGNATURE_HEADERS:
        msg_id, timestamp = headers.get(id_name), headers.get(timestamp_name)
        signature = headers.get(signature_name)
        if msg_id and timestamp and signature:
            return Signed(msg_id, timestamp, signature)
    raise ApiError(
        401,
        ErrorCode.MISSING_SIGNATURE_HEADERS,
        "webhook-id, webhook-timestamp and webhook-signature (or their svix-* equivalents) are required",
    )


async def read_body(receive: Receive, headers: WebhookHeaders, limit: int, deadline: float, timeout: float) -> bytes:
    """Read at most `limit` bytes before `deadline` (the event loop's clock); refuse as soon as the body is
    known to be larger (413), or when it is late (408: a trickled body cannot hold a connection for ever).

    Raises Starlette's `ClientDisconnect` if the client goes away mid-body."""
    too_large = ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than the {limit}-byte limit")
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise ApiError(
            408, ErrorCode.REQUEST_TIMEOUT, f"the body did not arrive within {timeout:g} s; nothing was accepted"
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_timestamp(timestamp: str, now: float) -> None:
    try:
        sent = int(timestamp)
    except ValueError:
        raise ApiError(401, ErrorCode.INVALID_SIGNATURE, "webhook-timestamp must be unix seconds") from None
    if abs(now - sent) > TIMESTAMP_TOLERANCE_SECONDS:
        raise ApiError(
            401,
            ErrorCode.TIMESTAMP_OUT_OF_TOLERANCE,
            f"webhook-timestamp is {int(now - sent)} s from now; at most {TIMESTAMP_TOLERANCE_SECONDS} s is accepted",
        )


def verify_signature(keys: SignatureKeys, body: bytes, signed: Signed) -> None:
    """Accept if any configured secret (rotation keeps several) signed these exact bytes; nothing is decoded first."""
    if not keys.verifies(signed.msg_id, signed.timestamp, signed.signature, body):
        raise ApiError(401, ErrorCode.INVALID_SIGNATURE, "no signature matches any configured webhook secret")


def parse_json(body: bytes) -> object:
    """The body as JSON. orjson decides what it accepts (it checks UTF-8 itself); for anything it refuses the
    standard library decides, and names the problem, so what is accepted and every error's wording are the
    standard library's."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not UTF-8, so it cannot be JSON") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}") from None


def answer_body(status: str, msg_id: str) -> bytes:
    """``{"status": …, "id": …}``, byte for byte as Starlette's `JSONResponse` renders it."""
    return b'{"status":"' + status.encode() + b'","id":' + orjson.dumps(msg_id) + b"}"


class Receiver:
    """The webhook endpoint, holding what it needs: verifiers, the queue and the body limit."""

    def __init__(self, secrets: list[str], queue: WebhookQueue, max_body_bytes: int) -> None:
        self.verifiers = SignatureKeys(secrets)
        self.queue = queue
        self.max_body_bytes = max_body_bytes

    async def handle(self, headers: WebhookHeaders, receive: Receive, deadline: float, timeout: float) -> Answer:
        """Check, verify and enqueue one webhook; raises `ApiError` (a `Refused` once the type is known)."""
        check_media_type(headers)
        signed = signature_headers(headers)
        body = await read_body(receive, headers, self.max_body_bytes, deadline, timeout)
        check_timestamp(signed.timestamp, time.time())
        verify_signature(self.verifiers, body, signed)
        parsed = parse_json(body)
        try:
            event_type = read_envelope(parsed).event_type
        except InvalidEnvelope as exc:
            raise ApiError(400, ErrorCode.INVALID_ENVELOPE, str(exc)) from None
        received_at = datetime.now(UTC).isoformat()
        try:
            # A body that parsed is UTF-8: orjson and the standard library both insist on it.
            fresh = await self.queue.submit(signed.msg_id, body.decode("utf-8"), received_at)
        except QueueUnavailable as exc:
            log.error("event=%s type=%s result=queue_unavailable error=%r", signed.msg_id, event_type, str(exc))
            unavailable = ApiError(
                503,
                ErrorCode.QUEUE_UNAVAILABLE,
                "the queue is unavailable; nothing was accepted, retry later",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
            raise Refused(unavailable, event_type) from None
        if not fresh:
            return Answer(200, answer_body("duplicate", signed.msg_id), event_type)
        return Answer(202, answer_body("accepted", signed.msg_id), event_type)
