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

from starlette.types import Message, Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.common.errors import error_response
from service.ingest.receiver import (
    Answer,
    Receiver,
    Refused,
    WebhookHeaders,
    check_timestamp,
    read_body,
    signature_headers,
    verify_signature,
)
from service.ingest.tally import WebhookTally
from service.security.failure_budget import FailureLimiter
from service.security.sources import SourceResolver, bucket_key, is_within, parse_networks

log = logging.getLogger("synctrack.receiver")

SOURCE_MEMO_SIZE = 4096
"""Sources remembered per process (peer and forwarding headers → source, budget key, allowed): Codat
sends from a handful of addresses, so parsing them for every webhook would be wasted."""
JSON_CONTENT = (b"content-type", b"application/json")


class WebhookGuard:
    """The ASGI app of the webhook route: the guard's checks, then the receiver, then the answer, counted.

    One frame from the route to the receiver — no request/response adapter, no wrapped `send` to learn
    the status (the guard holds the response it sends) — and counters written per turn of the event
    loop (`service/ingest/tally.py`). Served in front of the app's general middleware
    (`service/common/front.py`).
    """

    def __init__(self, receiver: Receiver, settings: Settings) -> None:
        self.receiver = receiver
        self.allowed = parse_networks(settings.webhook_allowed_networks, "SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS")
        self.sources = SourceResolver(parse_networks(settings.trusted_proxies, "SYNCTRACK_TRUSTED_PROXIES"))
        self.limiter = FailureLimiter(settings.failure_limit_per_minute)
        self.body_timeout = settings.webhook_body_timeout_seconds
        self.tally = WebhookTally()
        self._sources: dict[tuple[str, tuple[str, ...]], tuple[str, str, bool]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        tally = self.tally
        tally.in_flight += 1
        try:
            headers = WebhookHeaders.of(scope)
            try:
                answer = await self.answer(scope, headers, receive, deadline)
            except ApiError as refused:
                await error_response(refused)(scope, receive, send)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(b"content-length", str(len(answer.body)).encode()), JSON_CONTENT],
                }
            )
            await send({"type": "http.response.body", "body": answer.body})
        finally:
            tally.in_flight -= 1
            tally.settle()

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

    async def answer(self, scope: Scope, headers: WebhookHeaders, receive: Receive, deadline: float) -> Answer:
        """The answer to this webhook, in the order of the checks; raises `ApiError` for a refusal, and a 4xx
        from the receiver is charged to the source's failure budget."""
        source, key, allowed = self.source(scope, headers)
        if not allowed:
            detail = "this source address may not deliver webhooks (SYNCTRACK_WEBHOOK_ALLOWED_NETWORKS)"
            self.tally.add(None, "rejected", ErrorCode.FORBIDDEN_NETWORK.value)
            raise ApiError(403, ErrorCode.FORBIDDEN_NETWORK, detail)
        wait = self.limiter.retry_after(key)
        if wait is not None:
            body = await self.genuine_body(headers, receive, deadline)
            if body is None:
                self.tally.add(None, "rejected", ErrorCode.RATE_LIMITED.value)
                detail = f"too many rejected webhooks from this source; retry in {wait} s"
                raise ApiError(429, ErrorCode.RATE_LIMITED, detail, headers={"Retry-After": str(wait)})
            receive = replay(body, receive)
        try:
            answer = await self.receiver.handle(headers, receive, deadline, self.body_timeout)
        except ApiError as refused:
            self.tally.add(refused.event_type if isinstance(refused, Refused) else None, "rejected", refused.code.value)
            if 400 <= refused.status < 500 and self.limiter.charge(key):
                log.warning("msg=source_rate_limited source=%s route=webhooks", source)
            raise
        self.tally.add(answer.event_type, answer.result)
        return answer

    async def genuine_body(self, headers: WebhookHeaders, receive: Receive, deadline: float) -> bytes | None:
        """The body, if the request carries a valid signature within the time tolerance; None otherwise."""
        try:
            signed = signature_headers(headers)
            check_timestamp(signed.timestamp, time.time())
            body = await read_body(receive, headers, self.receiver.max_body_bytes, deadline, self.body_timeout)
            verify_signature(self.receiver.verifiers, body, signed)
        except ApiError:
            return None
        return body


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
