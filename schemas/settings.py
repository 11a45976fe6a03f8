"""Every setting Synctrack reads, in one object, from ``SYNCTRACK_*`` environment variables.

Nothing else reads the environment: a composition root (the app factory, the worker entry point, the CLI) builds
the object once and passes it down. docs/configuration.md says what each variable does.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

RECONCILE_EVERY_WITH_A_KEY_SECONDS = 6 * 3600.0
"""`SYNCTRACK_RECONCILE_EVERY` when it is unset and a Codat API key is set: lost webhooks are repaired within hours."""


def parse_duration(value: object) -> object:
    """Accept ``300``, ``300s``, ``5m``, ``1h`` or ``1d`` for a number of seconds."""
    text = value.strip().lower() if isinstance(value, str) else ""
    if text[-1:] in DURATION_UNITS:
        try:
            return float(text[:-1]) * DURATION_UNITS[text[-1]]
        except ValueError:
            pass
    return value


def split(text: str, separator: str = ",") -> list[str]:
    """The parts of `text` between separators, stripped, empty ones left out."""
    return [part.strip() for part in text.split(separator) if part.strip()]


def parse_overrides(text: str) -> dict[str, float]:
    """``banking-transactions=6h,invoices=48h`` -> seconds per data type; raises ValueError saying why."""
    overrides: dict[str, float] = {}
    for part in split(text):
        name, _, raw = (piece.strip() for piece in part.partition("="))
        try:
            seconds = float(parse_duration(raw))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            seconds = 0.0
        if not name or seconds <= 0:
            raise ValueError(f"{part!r} is not <data type>=<duration above zero>, e.g. invoices=48h")
        overrides[name] = seconds
    return overrides


BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DATA_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")


def parse_bundles(text: str) -> dict[str, list[str]]:
    """``ar=invoices,payments;close=balanceSheet`` -> data types per bundle name; raises ValueError saying why."""
    bundles: dict[str, list[str]] = {}
    for part in split(text, ";"):
        name, equals, members = (piece.strip() for piece in part.partition("="))
        data_types = split(members)
        if not equals or not BUNDLE_NAME.match(name) or not data_types:
            raise ValueError(f"{part!r} is not <name>=<data type>,<data type>..., e.g. ar=invoices,payments")
        if bad := [t for t in data_types if not DATA_TYPE_NAME.match(t)]:
            raise ValueError(f"bundle {name!r}: {bad[0]!r} is not a Codat data type name")
        if name in bundles:
            raise ValueError(f"bundle {name!r} is named twice")
        bundles[name] = list(dict.fromkeys(data_types))
    return bundles


def _parsed_by(parse: Any) -> BeforeValidator:
    """Read a string from the environment with `parse`; anything else is validated as given."""
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


CommaList = Annotated[list[str], NoDecode, _parsed_by(split)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, or a duration with a unit (`90s`, `10m`, `6h`, `2d`)."""


def _duration(default: float, name: str, *, ge: float | None = None, gt: float | None = None) -> Any:
    """A `Duration` read from the variable `name`, or from `name` + ``_SECONDS``."""
    return Field(default, ge=ge, gt=gt, validation_alias=AliasChoices(name, f"{name}_SECONDS"))


class Settings(BaseSettings):
    """Synctrack's configuration; docs/configuration.md says what each variable does."""

    model_config = SettingsConfigDict(env_prefix="SYNCTRACK_", extra="ignore", populate_by_name=True)

    # Receiver
    webhook_secrets: CommaList = []
    max_body_bytes: int = MIB
    dedupe_window_hours: int = 72
    webhook_allowed_networks: CommaList = []
    trusted_proxies: CommaList = []
    max_header_bytes: int = 32 * 1024
    webhook_body_timeout_seconds: float = 10.0

    # Storage and queue
    database_url: str = "sqlite:///./synctrack.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "synctrack"
    embedded: bool = False
    """True in `synctrack dev`: an in-process Redis (fakeredis) and an in-process worker."""

    # Workers
    worker_max_retries: int = 8
    worker_min_backoff_ms: int = 1_000
    worker_max_backoff_ms: int = 300_000
    worker_heartbeat_timeout_ms: int = 60_000
    worker_poll_ms: int = Field(default=1_000, ge=1, le=10_000)
    live_window_seconds: Duration = _duration(600, "SYNCTRACK_LIVE_WINDOW", ge=0)
    sync_stale_after_seconds: Duration = _duration(6 * 3600, "SYNCTRACK_SYNC_STALE_AFTER")
    sync_stale_check_seconds: float = 60.0
    freshness_after_seconds: Duration = _duration(86_400, "SYNCTRACK_FRESHNESS_AFTER", gt=0)
    freshness_overrides: Annotated[dict[str, float], NoDecode, _parsed_by(parse_overrides)] = {}
    freshness_check_seconds: float = 60.0
    deauthorize_after_seconds: Duration = _duration(90 * 86400, "SYNCTRACK_DEAUTHORIZE_AFTER", gt=0)
    keepalive_after_seconds: Duration = _duration(30 * 86400, "SYNCTRACK_KEEPALIVE_AFTER", ge=0)
    keepalive_data_type: str = "company"
    keepalive_check_seconds: float = 3600.0
    freshness_schedule_factor: float = Field(1.5, gt=0)
    bundles: Annotated[dict[str, list[str]], NoDecode, _parsed_by(parse_bundles)] = {}

    # Platform incidents
    incident_window_seconds: Duration = _duration(900, "SYNCTRACK_INCIDENT_WINDOW", gt=0)
    incident_min_connections: int = Field(5, ge=1)
    incident_failure_share: float = Field(0.5, gt=0, le=1)
    incident_check_seconds: Duration = 30.0
    incident_auto_refresh: bool = False
    """Unset, on when `codat_api_key` is set."""

    # Stream
    stream_retention_hours: int = 24
    stream_max_changes: int = 100_000
    stream_heartbeat_seconds: float = 15.0
    stream_client_buffer: int = 1_000
    stream_token_in_query: bool = False
    stream_send_timeout_seconds: float = 30.0

    # Codat API
    codat_base_url: str = "https://api.codat.io"
    codat_api_key: str = ""
    codat_timeout_seconds: float = 15.0
    codat_max_retries: int = 4
    codat_max_retry_after_seconds: float = 30.0
    reconcile_every_seconds: Duration = _duration(0, "SYNCTRACK_RECONCILE_EVERY")
    """0 = off. Unset, `RECONCILE_EVERY_WITH_A_KEY_SECONDS` when `codat_api_key` is set."""
    reconcile_lookback_hours: float = 72.0
    reconcile_discover: bool = False
    reconcile_overdue_check_seconds: float = Field(20.0, ge=0)

    # Ops
    raw_event_retention_days: int = 90
    log_format: Literal["kv", "json"] = "kv"
    log_level: str = "INFO"

    # Security
    admin_token_hashes: CommaList = []
    token_signing_key: str = ""
    token_max_ttl_seconds: Duration = _duration(7 * 86400, "SYNCTRACK_TOKEN_MAX_TTL")
    auth_disabled: bool = False
    failure_limit_per_minute: int = 60
    actions_per_minute: int = Field(default=10, ge=0)
    cors_origins: CommaList = []
    metrics_require_token: bool = False
    max_admin_body_bytes: int = Field(MIB, ge=1)

    # Outbound subscriptions
    subscriptions_allow_http: bool = False
    subscriptions_allow_private: bool = False
    subscriptions_timeout_seconds: float = 15.0
    subscriptions_retry_min_seconds: float = 5.0
    subscriptions_retry_max_seconds: float = 6 * 3600
    subscriptions_retry_window_seconds: float = 24 * 3600
    subscriptions_disable_after_seconds: float = 5 * 86400
    subscriptions_secret_overlap_seconds: float = 24 * 3600
    subscriptions_dispatcher: bool = True
    subscriptions_sweep_every_seconds: float = 60.0
    subscriptions_delivery_retention_days: int = 30

    @model_validator(mode="after")
    def _on_when_a_key_is_set(self) -> Self:
        if self.codat_api_key and "reconcile_every_seconds" not in self.model_fields_set:
            self.reconcile_every_seconds = RECONCILE_EVERY_WITH_A_KEY_SECONDS
        if self.codat_api_key and "incident_auto_refresh" not in self.model_fields_set:
            self.incident_auto_refresh = True
        return self
