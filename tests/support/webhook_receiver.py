"""A real HTTP receiver for outbound webhooks: verifies signatures with `svix`, records every request.

Each path is one endpoint. A test gives an endpoint its secrets (`expect`) and, optionally, a script
of answers for its first requests (`500`, `410`, `"timeout"` = answer too late); after the script
the endpoint answers 204.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from svix.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    webhook_id: str
    headers: dict[str, str]
    body: dict[str, Any]
    verified: dict[str, bool]
    """secret -> did this request verify with it (svix `Webhook(secret).verify`)."""
    answered: int | str


@dataclass
class Endpoint:
    secrets: list[str] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)


class _CountingServer(ThreadingHTTPServer):
    """Counts the TCP connections it accepts (one per client connection, however many requests it carries)."""

    connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class WebhookReceiver:
    def __init__(self, port: int = 0, slow_seconds: float = 3.0) -> None:
        self.endpoints: dict[str, Endpoint] = defaultdict(Endpoint)
        self.received: list[Received] = []
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.server = _CountingServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self.server.connections

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def expect(self, path: str, secrets: list[str], script: list[int | str] | None = None) -> None:
        with self.lock:
            endpoint = self.endpoints[path]
            endpoint.secrets = list(secrets)
            endpoint.script = list(script or [])

    def at(self, path: str, *, ok_only: bool = False) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path and (not ok_only or r.answered == 204)]

    def _answer(self, path: str) -> int | str:
        with self.lock:
            script = self.endpoints[path].script
            return script.pop(0) if script else 204

    def _record(self, path: str, body: bytes, headers: dict[str, str], answered: int | str) -> None:
        with self.lock:
            secrets = list(self.endpoints[path].secrets)
        verified = {}
        for secret in secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified[secret] = True
            except WebhookVerificationError:
                verified[secret] = False
        entry = Received(path, headers.get("webhook-id", ""), headers, json.loads(body), verified, answered)
        with self.lock:
            self.received.append(entry)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._answer(self.path)
                receiver._record(self.path, body, headers, answer)
                if answer == "timeout":
                    time.sleep(receiver.slow_seconds)
                    answer = 204
                self.send_response(int(answer))
                self.send_header("content-length", "0")
                self.end_headers()

        return Handler
