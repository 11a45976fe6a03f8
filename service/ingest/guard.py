"""`WebhookGuard`: what stands in front of `POST /webhooks/codat` besides the signature.

1. Source allow-list (`SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS`, Codat's published sending addresses):
   any other source is refused with 403 `forbidden_network` before a byte of the body is read. The
   source is the peer, or the client named in `X-Forwarded-For` by a trusted proxy (`service/security/sources.py`).
2. Body deadline: the whole body must arrive within `SYNCTRACK_WEBHOOK_BODY_TIMEOUT_SECONDS` of the
   request's start, else 408 `request_timeout` (a trickled body cannot hold a connection for ever).
3. Failure budget: every 4xx the receiver gives counts against the source (`service/security/failure_budget.py`).
   A source over budget is answered 429 `rate_limited` with `Retry-After` — unless the request is
   genuinely signed: the guard verifies it with the receiver's own checks and hands the body on, so a
   flood from a shared address (a proxy, a NAT) never delays Codat's real deliveries.

Neither touches Redis, so a flood of forged webhooks costs a signature check at most.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.common.errors import error_response
from service.ingest.receiver import Receiver, check_timestamp, read_body, signature_headers, verify_signature
from service.ingest.tally import WebhookTally
from service.security.failure_budget import FailureLimiter
from service.security.sources import SourceResolver, bucket_key, parse_networks

log = logging.getLogger("synctrack.receiver")


class WebhookGuard:
    """The ASGI app of the webhook route: the guard's checks, then the receiver, then the answer, counted.

    One frame from the route to the receiver — no request/response adapter, no wrapped `send` to learn
    the status (the guard holds the response it sends) — and counters written per turn of the event
    loop (`service/ingest/tally.py`). Served past the router (`service/common/direct.py`).
    """

    def __init__(self, receiver: Receiver, settings: Settings) -> None:
        self.receiver = receiver
        self.allowed = parse_networks(settings.webhook_allowed_networks, "SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS")
        self.sources = SourceResolver(parse_networks(settings.trusted_proxies, "SYNCTRACK_TRUSTED_PROXIES"))
        self.limiter = FailureLimiter(settings.failure_limit_per_minute)
        self.body_timeout = settings.webhook_body_timeout_seconds
        self.tally = WebhookTally()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        receive = with_deadline(receive, time.monotonic() + self.body_timeout, self.body_timeout)
        tally = self.tally
        tally.in_flight += 1
        try:
            response = await self.answer(scope, receive)
            await response(scope, receive, send)
        finally:
            tally.in_flight -= 1
            tally.settle()

    async def answer(self, scope: Scope, receive: Receive) -> Response:
        """The response to this webhook, in the order of the checks; a 4xx from the receiver is charged to
        the source's failure budget."""
        if self.allowed and not self.sources.within(scope, self.allowed):
            detail = "this source address may not deliver webhooks (SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS)"
            self.tally.add(None, "rejected", ErrorCode.FORBIDDEN_NETWORK.value)
            return error_response(ApiError(403, ErrorCode.FORBIDDEN_NETWORK, detail))
        source = self.sources.source(scope)
        key = bucket_key(source)
        wait = self.limiter.retry_after(key)
        if wait is not None:
            body = await self.genuine_body(scope, receive)
            if body is None:
                self.tally.add(None, "rejected", ErrorCode.RATE_LIMITED.value)
                detail = f"too many rejected webhooks from this source; retry in {wait} s"
                return error_response(ApiError(429, ErrorCode.RATE_LIMITED, detail, headers={"Retry-After": str(wait)}))
            receive = replay(body, receive)
        request = Request(scope, receive)
        try:
            response = await self.receiver.handle(request)
        except ApiError as refused:
            self.tally.add(getattr(request.state, "event_type", None), "rejected", refused.code.value)
            if 400 <= refused.status < 500 and self.limiter.charge(key):
                log.warning("msg=source_rate_limited source=%s route=webhooks", source)
            return error_response(refused)
        result = "accepted" if response.status_code == 202 else "duplicate"
        self.tally.add(getattr(request.state, "event_type", None), result)
        return response

    async def genuine_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The body, if the request carries a valid signature within the time tolerance; None otherwise."""
        request = Request(scope, receive)
        try:
            msg_id, timestamp, signature = signature_headers(request)
            check_timestamp(timestamp, time.time())
            body = await read_body(request, self.receiver.max_body_bytes)
            verify_signature(self.receiver.verifiers, body, msg_id, timestamp, signature)
        except ApiError:
            return None
        return body


def with_deadline(receive: Receive, deadline: float, timeout: float) -> Receive:
    """A `receive` whose body messages must all arrive before `deadline` (monotonic), else ApiError 408.

    Once the body is complete, later calls (waiting for a disconnect) are passed through unbounded.
    """
    complete = False

    async def bounded() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            # asyncio.timeout, not wait_for: wait_for wraps every body read in a new task.
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                message = await receive()
        except TimeoutError:
            raise ApiError(
                408, ErrorCode.REQUEST_TIMEOUT, f"the body did not arrive within {timeout:g} s; nothing was accepted"
            ) from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return bounded


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over `body` (already read) first, then whatever the client sends next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
