"""`POST /webhooks/codat`: check, verify, de-duplicate, enqueue — then answer.

Cheapest check first, and nothing trusts the body before the signature does: the source network (403, before a
byte is read); media type, signature headers, size, body deadline, timestamp and signature over the raw bytes;
then UTF-8, JSON and envelope. The answer (202 accepted, 200 duplicate) is given once Redis holds the event.
Every 4xx counts against the source's failure budget; a source over it gets 429 unless genuinely signed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, read_envelope
from schemas.settings import Settings
from service.common.errors import error_response
from service.ingest.enqueue import QueueUnavailable, WebhookQueue
from service.ingest.signature import SignatureKeys
from service.ingest.tally import WebhookTally
from service.security.failure_budget import FailureLimiter
from service.security.sources import SourceResolver, bucket_key, is_within, parse_networks

log = logging.getLogger("synctrack.receiver")

TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
RETRY_AFTER_SECONDS = "5"
HEADER_FAMILIES = ("svix", "webhook")
"""Svix's own header names win when both families are present, as Svix's library does."""
SIGNATURE_HEADERS = tuple(
    tuple(f"{family}-{part}".encode() for part in ("id", "timestamp", "signature")) for family in HEADER_FAMILIES
)
"""(id, timestamp, signature) header names of each family, in order of preference."""
SOURCE_MEMO_SIZE = 4096
"""Sources remembered per process (peer and forwarding headers → source, budget key, allowed)."""
WANTED_HEADERS = frozenset(
    {b"content-type", b"content-length", b"x-forwarded-for"} | {name for names in SIGNATURE_HEADERS for name in names}
)


@dataclass(slots=True)
class WebhookHeaders:
    """The headers the route reads, in one pass: the first of a repeated header counts (as `Headers.get`), but
    every `X-Forwarded-For` is kept in order (each proxy may have added its own)."""

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


class Refused(ApiError):
    """Raised when a webhook is refused after its event type is known (the queue was unavailable)."""

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
    """Read at most `limit` bytes before `deadline` (the loop's clock): 413 as soon as it is known to be larger,
    408 when late (a trickled body cannot hold a connection). Raises `ClientDisconnect` if the client goes away."""
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
    """The body as JSON: orjson first; what it refuses, the standard library decides and names the problem."""
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


class OrjsonResponse(JSONResponse):
    """Starlette's `JSONResponse`, rendered by orjson: the same bytes for the receiver's answers, sooner."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Receiver:
    """The ASGI endpoint of the webhook route, holding what it needs: verifiers, the queue, the limits."""

    def __init__(self, settings: Settings, queue: WebhookQueue) -> None:
        self.verifiers = SignatureKeys(settings.webhook_secrets)
        self.queue = queue
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.webhook_body_timeout_seconds
        self.allowed = parse_networks(settings.webhook_allowed_networks, "SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS")
        self.sources = SourceResolver(parse_networks(settings.trusted_proxies, "SYNCTRACK_TRUSTED_PROXIES"))
        self.limiter = FailureLimiter(settings.failure_limit_per_minute)
        self.tally = WebhookTally()
        self.live_window = timedelta(seconds=settings.live_window_seconds) if settings.live_window_seconds else None
        """An event generated longer ago than this goes to the backfill queue; None: every event is live."""
        self._sources: dict[tuple[str, tuple[str, ...]], tuple[str, str, bool]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.tally.in_flight += 1
        try:
            response = await self.answer(scope, receive)
        except ClientDisconnect:
            return  # gone mid-body: nobody to answer, nothing accepted
        finally:
            self.tally.in_flight -= 1
            self.tally.settle()
        await response(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive) -> Response:
        """The answer to one webhook, after the checks in their order; every answer is counted."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        headers = WebhookHeaders.of(scope)
        source, budget, allowed = self.source(scope, headers)
        if not allowed:
            detail = "this source address may not deliver webhooks (SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS)"
            return self.refuse(ApiError(403, ErrorCode.FORBIDDEN_NETWORK, detail))
        try:
            signed, body = await self.verified(headers, receive, deadline)
        except ApiError as refused:
            wait = self.limiter.retry_after(budget)
            if wait is not None:
                detail = f"too many rejected webhooks from this source; retry in {wait} s"
                return self.refuse(ApiError(429, ErrorCode.RATE_LIMITED, detail, headers={"Retry-After": str(wait)}))
            return self.refuse(refused, source, budget)
        try:
            event_type, fresh = await self.enqueue(signed, body)
        except ApiError as refused:
            return self.refuse(refused, source, budget)
        self.tally.add(event_type, "accepted" if fresh else "duplicate")
        return OrjsonResponse(
            {"status": "accepted" if fresh else "duplicate", "id": signed.msg_id}, status_code=202 if fresh else 200
        )

    def source(self, scope: Scope, headers: WebhookHeaders) -> tuple[str, str, bool]:
        """(source address, its failure-budget key, whether it may deliver), remembered per peer and forwarding."""
        client = scope.get("client")
        memo_key = (str(client[0]) if client else "", headers.forwarded)
        found = self._sources.get(memo_key)
        if found is None:
            source = self.sources.source_of(*memo_key)
            found = (source, bucket_key(source), not self.allowed or is_within(source, self.allowed))
            if len(self._sources) >= SOURCE_MEMO_SIZE:
                self._sources.clear()
            self._sources[memo_key] = found
        return found

    async def verified(self, headers: WebhookHeaders, receive: Receive, deadline: float) -> tuple[Signed, bytes]:
        """The signature headers' claims and the raw body, once every check holds; raises `ApiError`."""
        check_media_type(headers)
        signed = signature_headers(headers)
        body = await read_body(receive, headers, self.max_body_bytes, deadline, self.body_timeout)
        check_timestamp(signed.timestamp, time.time())
        verify_signature(self.verifiers, body, signed)
        return signed, body

    async def enqueue(self, signed: Signed, body: bytes) -> tuple[str, bool]:
        """Parse a verified webhook and queue it: (its event type, whether it is new); raises `ApiError`."""
        try:
            envelope = read_envelope(parse_json(body))
        except InvalidEnvelope as exc:
            raise ApiError(400, ErrorCode.INVALID_ENVELOPE, str(exc)) from None
        event_type, now = envelope.event_type, datetime.now(UTC)
        generated = envelope.generated_at
        backfill = self.live_window is not None and generated is not None and now - generated > self.live_window
        try:
            # A body that parsed is UTF-8: orjson and the standard library both insist on it.
            fresh = await self.queue.submit(signed.msg_id, body.decode("utf-8"), now.isoformat(), backfill)
        except QueueUnavailable as exc:
            log.error("event=%s type=%s result=queue_unavailable error=%r", signed.msg_id, event_type, str(exc))
            unavailable = ApiError(
                503,
                ErrorCode.QUEUE_UNAVAILABLE,
                "the queue is unavailable; nothing was accepted, retry later",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
            raise Refused(unavailable, event_type) from None
        return event_type, fresh

    def refuse(self, refused: ApiError, source: str = "", budget: str | None = None) -> Response:
        """Count a refusal and answer it; a 4xx is charged to `budget` (the source's failure budget), if given."""
        self.tally.add(refused.event_type if isinstance(refused, Refused) else None, "rejected", refused.code.value)
        if budget is not None and 400 <= refused.status < 500 and self.limiter.charge(budget):
            log.warning("msg=source_rate_limited source=%s route=webhooks", source)
        return error_response(refused)
