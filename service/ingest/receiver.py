"""`POST /webhooks/codat`: verify, check, de-duplicate, enqueue — then answer.

The order of checks is cheapest first and never trusts the body before the signature: media type,
signature headers, size (while reading — a huge body is never held in memory), timestamp, signature
over the raw bytes (`service/ingest/signature.py`: nothing decodes the body before it), UTF-8, JSON,
envelope shape. Only then is the event handed to `WebhookQueue`, and the answer (202 accepted / 200
duplicate) is given after Redis has it.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from schemas.errors import ApiError, ErrorCode
from schemas.events import InvalidEnvelope, envelope_summary
from service.ingest.enqueue import QueueUnavailable, WebhookQueue
from service.ingest.signature import SignatureKeys

log = logging.getLogger("synctrack.receiver")

TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
RETRY_AFTER_SECONDS = "5"
HEADER_FAMILIES = ("svix", "webhook")
"""Svix's own header names win when both families are present, as Svix's library does."""


def signature_headers(request: Request) -> tuple[str, str, str]:
    for family in HEADER_FAMILIES:
        msg_id = request.headers.get(f"{family}-id")
        timestamp = request.headers.get(f"{family}-timestamp")
        signature = request.headers.get(f"{family}-signature")
        if msg_id and timestamp and signature:
            return msg_id, timestamp, signature
    raise ApiError(
        401,
        ErrorCode.MISSING_SIGNATURE_HEADERS,
        "webhook-id, webhook-timestamp and webhook-signature (or their svix-* equivalents) are required",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; refuse as soon as the body is known to be larger."""
    too_large = ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than the {limit}-byte limit")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


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


def verify_signature(keys: SignatureKeys, body: bytes, msg_id: str, timestamp: str, signature: str) -> None:
    """Accept if any configured secret (rotation keeps several) signed these exact bytes; nothing is decoded first."""
    if not keys.verifies(msg_id, timestamp, signature, body):
        raise ApiError(401, ErrorCode.INVALID_SIGNATURE, "no signature matches any configured webhook secret")


class Receiver:
    """The webhook endpoint, holding what it needs: verifiers, the queue and the body limit."""

    def __init__(self, secrets: list[str], queue: WebhookQueue, max_body_bytes: int) -> None:
        self.verifiers = SignatureKeys(secrets)
        self.queue = queue
        self.max_body_bytes = max_body_bytes

    async def handle(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "webhooks must be sent as application/json")
        msg_id, timestamp, signature = signature_headers(request)
        body = await read_body(request, self.max_body_bytes)
        check_timestamp(timestamp, time.time())
        verify_signature(self.verifiers, body, msg_id, timestamp, signature)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, ErrorCode.INVALID_JSON, "the body is not UTF-8, so it cannot be JSON") from None
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}") from None
        try:
            event_type, _ = envelope_summary(parsed)
        except InvalidEnvelope as exc:
            raise ApiError(400, ErrorCode.INVALID_ENVELOPE, str(exc)) from None
        request.state.event_type = event_type  # labels the webhook counters (service/api/scrape.py)
        received_at = datetime.now(UTC).isoformat()
        try:
            fresh = await self.queue.submit(msg_id, text, received_at)
        except QueueUnavailable as exc:
            log.error("event=%s type=%s result=queue_unavailable error=%r", msg_id, event_type, str(exc))
            raise ApiError(
                503,
                ErrorCode.QUEUE_UNAVAILABLE,
                "the queue is unavailable; nothing was accepted, retry later",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
        if not fresh:
            return JSONResponse({"status": "duplicate", "id": msg_id}, status_code=200)
        return JSONResponse({"status": "accepted", "id": msg_id}, status_code=202)
