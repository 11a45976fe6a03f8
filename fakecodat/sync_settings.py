"""The fake Codat's sync settings: the client's, and each company's, per data type.

As Codat documents them: `GET /profile/syncSettings` answers ``{clientId, settings, overridesDefaults}`` and
`GET /companies/{companyId}/syncSettings` ``{companyId, settings}``, each setting ``{dataType,
fetchOnFirstLink, syncSchedule, syncOrder, syncFromUtc, syncFromWindow, monthsToSync, isLocked}`` with
`syncSchedule` in hours. Every data type starts daily (24); a company's settings are the client's except
where the company has its own value. The control API (`POST /_control/sync-settings`) changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fakecodat.catalog import ACCOUNTING_TYPES, BANKING_TYPES, COMMERCE_TYPES, new_id

DEFAULT_HOURS = 24
ALL = "*"
"""In a change, every data type the client's settings list."""


def _default_client() -> dict[str, float | None]:
    return dict.fromkeys((*ACCOUNTING_TYPES, *BANKING_TYPES, *COMMERCE_TYPES), DEFAULT_HOURS)


@dataclass
class SyncSettings:
    client_id: str = field(default_factory=new_id)
    client: dict[str, float | None] = field(default_factory=_default_client)
    """Data type -> the client's `syncSchedule` (None: the setting has none)."""
    companies: dict[str, dict[str, float]] = field(default_factory=dict)
    """Company id -> data type -> the company's own `syncSchedule`."""
    overrides_defaults: bool = False

    def change(self, schedules: dict[str, Any], company_id: str | None = None) -> None:
        """Set `syncSchedule`s (data type or `*` -> hours) of the client, or of one company; for a company,
        null gives the data type back to the client's schedule; for the client, null leaves it without one."""
        names = list(self.client) if ALL in schedules else []
        wanted = {**dict.fromkeys(names, schedules.get(ALL)), **{k: v for k, v in schedules.items() if k != ALL}}
        for hours in wanted.values():
            if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float) or hours < 0):
                raise ValueError("a syncSchedule is a number of hours, zero or more, or null")
        if company_id is None:
            self.client.update(wanted)
            self.overrides_defaults = True
            return
        own = self.companies.setdefault(company_id, {})
        for data_type, hours in wanted.items():
            if hours is None:
                own.pop(data_type, None)
            else:
                own[data_type] = hours

    def client_body(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "settings": [_setting(dt, hours, i) for i, (dt, hours) in enumerate(self.client.items())],
            "overridesDefaults": self.overrides_defaults,
        }

    def company_body(self, company_id: str) -> dict[str, Any]:
        merged = {**self.client, **self.companies.get(company_id, {})}
        return {
            "companyId": company_id,
            "settings": [_setting(dt, hours, i) for i, (dt, hours) in enumerate(merged.items())],
        }

    def describe(self) -> dict[str, Any]:
        return {"client": dict(self.client), "companies": {k: dict(v) for k, v in self.companies.items()}}


def _setting(data_type: str, hours: float | None, order: int) -> dict[str, Any]:
    setting: dict[str, Any] = {
        "dataType": data_type,
        "fetchOnFirstLink": True,
        "syncOrder": order,
        "syncFromUtc": None,
        "syncFromWindow": None,
        "monthsToSync": 24,
        "isLocked": False,
    }
    if hours is not None:
        setting["syncSchedule"] = hours
    return setting
