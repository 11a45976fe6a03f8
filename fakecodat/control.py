"""A small synchronous client of the fake Codat's control API, for tests and `synctrack demo`."""

from __future__ import annotations

from typing import Any, Literal

import httpx


class FakeCodatControl:
    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        # Idle connections are dropped well before a server's keep-alive timeout (uvicorn: 5 s), so a
        # request never goes out on a connection the server is closing.
        self._http = httpx.Client(
            base_url=f"{self.url}/_control", timeout=timeout, limits=httpx.Limits(keepalive_expiry=2.0)
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def seed(
        self,
        count: int = 1,
        *,
        companies: list[dict[str, Any]] | None = None,
        announce: bool = True,
        initial_read: bool = True,
        history: int = 0,
        hold: str | None = None,
    ) -> list[dict[str, Any]]:
        """Create companies; each spec may give `name`, `platforms` (e.g. ["xero", "hsbc"]), `status`, `id`,
        `description`, `tags`, `history`, `hold`. `history`: finished pull operations per connection, without
        webhooks. `hold`: every connection's pull operations stay at that status (e.g. "Queued") until released."""
        body = {
            "count": count,
            "companies": companies,
            "announce": announce,
            "initial_read": initial_read,
            "history": history,
            "hold": hold,
        }
        created: list[dict[str, Any]] = self._call("POST", "/companies", body)["companies"]
        return created

    def configure(self, **settings: Any) -> dict[str, Any]:
        """`sync_seconds`, `failure_rate`, `failure_status`, `api_key`, `traffic_every_seconds`, `quota`,
        `quota_window_seconds`, `one_time_links`, `link_ttl_seconds`, `link_base_url`, `receiver_url`, `secret`."""
        result: dict[str, Any] = self._call("POST", "/config", settings)
        return result

    def webhooks(self, mode: Literal["deliver", "drop", "hold"] | None = None, duplicates: int | None = None) -> Any:
        body = {k: v for k, v in {"mode": mode, "duplicates": duplicates}.items() if v is not None}
        return self._call("POST", "/webhooks", body)

    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self._call("GET", "/webhooks")["messages"]
        return messages

    def release(self, order: Literal["fifo", "reverse", "shuffle"] = "fifo") -> int:
        released: int = self._call("POST", "/webhooks/release", {"order": order})["released"]
        return released

    def redeliver(self, ids: list[str] | None = None) -> int:
        count: int = self._call("POST", "/webhooks/redeliver", {"ids": ids})["redelivered"]
        return count

    def fault(self, path: str, **rule: Any) -> None:
        """Inject a failure: `status`, `retry_after`, `delay_seconds`, `times`, `method`, `message`."""
        self._call("POST", "/faults", {"path": path, **rule})

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_status(self, connection_id: str, status: str, notify: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/connections/{connection_id}", {"status": status, "notify": notify}
        )
        return result

    def hold(self, connection_id: str, status: str | None) -> dict[str, Any]:
        """Hold the connection's pull operations at `status` ("Queued", "Fetching", …); None releases them,
        and they finish as usual (as an on-premise connector's datasets do once it is back online)."""
        result: dict[str, Any] = self._call("POST", f"/connections/{connection_id}", {"hold": status})
        return result

    def delete_connection(self, connection_id: str, notify: bool = True) -> None:
        self._call("POST", f"/connections/{connection_id}", {"delete": True, "notify": notify})

    def links(self) -> list[dict[str, Any]]:
        """The one-time links issued, oldest first: `url`, `otp`, `connection_id`, `issued_at`, `expires_at`,
        `used_at`."""
        issued: list[dict[str, Any]] = self._call("GET", "/links")["links"]
        return issued

    def sync_settings(self, schedules: dict[str, float | None], company_id: str | None = None) -> dict[str, Any]:
        """Set `syncSchedule`s in hours per data type (`*`: every one) of the client, or of `company_id`."""
        body: dict[str, Any] = {"schedules": schedules, "company_id": company_id}
        result: dict[str, Any] = self._call("POST", "/sync-settings", body)
        return result

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self._call("GET", "/requests")["requests"]
        return log

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")
