"""Health: what a connection needs, in one word, one sentence and one next step. A pure function of ledger rows:
the first of `RULES` that applies wins. Only results since the connection last became Linked count; a connection
whose status is not known yet is judged like a Linked one."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.normalise import is_active_error, status_code
from schemas.statuses import Health, NextAction
from workers.ledger.rows import ConnectionRow, DataTypeRow

REAUTH_STATUS_CODES = frozenset({"401", "403"})
"""An active connection error with one of these codes: Codat's access was refused."""


@dataclass(frozen=True, slots=True)
class ConnectionHealth:
    health: Health
    reason: str
    next_action: NextAction
    data_type: str | None = None
    """The data type the reason is about, if any."""


@dataclass(frozen=True, slots=True)
class Situation:
    """What the rules look at, gathered once."""

    connection: ConnectionRow
    platform: str
    failures: list[tuple[datetime, str, str]]
    """(time, data type, status) of each data type whose latest result since the last link failed, latest first."""
    sync_active: bool
    incident_since: datetime | None = None
    """When the failures its platform's open incident counts begin."""

    @property
    def linked(self) -> bool:
        return self.connection.status in ("Linked", None)


Finding = tuple[str, str | None]
"""The reason, and the data type it is about (if any)."""


@dataclass(frozen=True, slots=True)
class Rule:
    health: Health
    next_action: NextAction
    applies: Callable[[Situation], Finding | None]


def _deleted(s: Situation) -> Finding | None:
    return (f"The {s.platform} connection was deleted.", None) if s.connection.deleted_at is not None else None


def _unlinked(s: Situation) -> Finding | None:
    if s.connection.status != "Unlinked":
        return None
    return f"{_cap(s.platform)} was disconnected: reconnect it to resume syncing.", None


def _needs_reauth(s: Situation) -> Finding | None:
    again = f"the customer must sign in to {s.platform} again"
    if s.connection.status == "Deauthorized":
        return f"{_cap(s.platform)} no longer lets Codat read the data: {again}.", None
    if not s.linked:
        return None
    refused = next((data_type for _, data_type, status in s.failures if status == "AuthError"), None)
    if refused is not None:
        return f"{_cap(s.platform)} refused access while syncing {refused}: {again}.", refused
    for entry in s.connection.errors or []:
        code = status_code(entry.get("statusCode"))
        if code in REAUTH_STATUS_CODES and is_active_error(entry):
            why = _text(entry.get("errorMessage")) or _text(entry.get("statusText"))
            return f"{_cap(s.platform)} refused access ({code}{f': {why}' if why else ''}): {again}.", None
    return None


def _link_failed(s: Situation) -> Finding | None:
    if s.connection.status != "PendingAuth" or s.connection.last_link_failure_at is None:
        return None
    failure = s.connection.last_link_failure or {}
    why = _text(failure.get("message")) or _text(failure.get("status_text")) or _text(failure.get("status_code"))
    return f"Linking {s.platform} failed{f' ({why})' if why else ''}: the customer can try again.", None


def _pending(s: Situation) -> Finding | None:
    if s.connection.status != "PendingAuth":
        return None
    return f"The customer has not finished linking {s.platform} yet.", None


def _platform_incident(s: Situation) -> Finding | None:
    if s.incident_since is None or not s.linked or not s.failures or s.failures[0][0] <= s.incident_since:
        return None
    return (
        f"{_cap(s.platform)} is having problems across many companies: nothing you need to do, syncing resumes "
        "once it recovers.",
        s.failures[0][1],
    )


def _failing(s: Situation) -> Finding | None:
    if not s.linked or not s.failures:
        return None
    _, data_type, status = s.failures[0]
    return f"Syncing {data_type} from {s.platform} failed ({status}): a refresh may fix it.", data_type


def _syncing(s: Situation) -> Finding | None:
    if not s.linked or not s.sync_active:
        return None
    return f"Codat is syncing data from {s.platform}.", None


def _healthy(s: Situation) -> Finding | None:
    return f"{_cap(s.platform)} is linked and nothing needs doing.", None


RULES: tuple[Rule, ...] = (
    Rule("deleted", "none", _deleted),
    Rule("unlinked", "reconnect", _unlinked),
    Rule("needs_reauth", "reconnect", _needs_reauth),
    Rule("link_failed", "reconnect", _link_failed),
    Rule("pending", "reconnect", _pending),
    Rule("platform_incident", "wait", _platform_incident),
    Rule("failing", "refresh", _failing),
    Rule("syncing", "wait", _syncing),
    Rule("healthy", "none", _healthy),
)
"""In order: the first that applies is the connection's health. The last always applies."""


def judge(
    connection: ConnectionRow,
    data_types: Iterable[DataTypeRow],
    sync_active: bool,
    incident_since: datetime | None = None,
) -> ConnectionHealth:
    """The connection's health; `incident_since`: when the failures its platform's open incident counts begin."""
    platform = connection.platform_name or connection.platform_key or "the platform"
    situation = Situation(connection, platform, _failures(connection, data_types), sync_active, incident_since)
    for rule in RULES:
        finding = rule.applies(situation)
        if finding is not None:
            return ConnectionHealth(rule.health, finding[0], rule.next_action, finding[1])
    raise AssertionError("the last rule always applies")  # pragma: no cover


def deauthorization_risk_at(connection: ConnectionRow, after: timedelta) -> datetime | None:
    """When Codat may deauthorize a Linked connection for want of a sync: its last sync or link, plus `after`."""
    if connection.deleted_at is not None or connection.status != "Linked":
        return None
    linked = connection.last_linked_at or connection.linked_at
    times = [t for t in (connection.last_sync_at, linked) if t is not None]
    return max(times) + after if times else None


def _failures(connection: ConnectionRow, data_types: Iterable[DataTypeRow]) -> list[tuple[datetime, str, str]]:
    since = connection.last_linked_at
    found: list[tuple[datetime, str, str]] = []
    for row in data_types:
        at = row.last_sync_at
        if row.phase == "failed" and at is not None and (since is None or at >= since):
            found.append((at, row.data_type, row.status))
    found.sort(key=lambda f: f[1])
    found.sort(key=lambda f: f[0], reverse=True)
    return found


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
