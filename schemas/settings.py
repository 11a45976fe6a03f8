"""Every setting Synctrack reads, in one object, from ``SYNCTRACK_*`` environment variables.

Nothing else in the code reads the environment: the object is built once by a composition root
(the ASGI app factory, the worker entry point, the CLI) and passed down.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

RECONCILE_EVERY_WITH_A_KEY_SECONDS = 6 * 3600.0
"""`SYNCTRACK_RECONCILE_EVERY` when it is unset and a Codat API key is set: lost webhooks are repaired within hours."""


def parse_duration(value: object) -> object:
    """Accept ``300``, ``300s``, ``5m``, ``1h`` or ``1d`` for a number of seconds."""
    if isinstance(value, str) and value.strip() and value.strip()[-1].lower() in DURATION_UNITS:
        text = value.strip()
        try:
            return float(text[:-1]) * DURATION_UNITS[text[-1].lower()]
        except ValueError:
            return value
    return value


def parse_overrides(text: str) -> dict[str, float]:
    """``banking-transactions=6h,invoices=48h`` -> seconds per data type; raises ValueError saying why."""
    overrides: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
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
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, equals, members = (piece.strip() for piece in part.partition("="))
        data_types = [t.strip() for t in members.split(",") if t.strip()]
        if not equals or not BUNDLE_NAME.match(name) or not data_types:
            raise ValueError(f"{part!r} is not <name>=<data type>,<data type>..., e.g. ar=invoices,payments")
        if bad := [t for t in data_types if not DATA_TYPE_NAME.match(t)]:
            raise ValueError(f"bundle {name!r}: {bad[0]!r} is not a Codat data type name")
        if name in bundles:
            raise ValueError(f"bundle {name!r} is named twice")
        bundles[name] = list(dict.fromkeys(data_types))
    return bundles


class Settings(BaseSettings):
    """Synctrack's configuration; docs/configuration.md says what each variable does."""

    model_config = SettingsConfigDict(env_prefix="SYNCTRACK_", extra="ignore", populate_by_name=True)

    # Receiver
    webhook_secrets: CommaList = []
    max_body_bytes: int = MIB
    dedupe_window_hours: int = 72
    webhook_allowed_networks: CommaList = []
    """CIDRs that may deliver webhooks (Codat's sending addresses); empty = any source."""
    trusted_proxies: CommaList = []
    """CIDRs of reverse proxies whose `X-Forwarded-For` is believed (for the allow-list and rate limits)."""
    max_header_bytes: int = 32 * 1024
    """Requests whose headers add up to more are refused (431), on every route."""
    webhook_body_timeout_seconds: float = 10.0
    """A webhook body not fully received this long after the request began is refused (408)."""

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
    """Longest wait of an idle worker on Redis before it looks at its queues again (at most 1000 ms): every enqueue
    wakes a waiting worker at once, so this only bounds how soon work that arrived without a wake-up is taken."""
    live_window_seconds: float = Field(
        600, ge=0, validation_alias=AliasChoices("SYNCTRACK_LIVE_WINDOW", "SYNCTRACK_LIVE_WINDOW_SECONDS")
    )
    """`SYNCTRACK_LIVE_WINDOW`: a webhook generated longer ago than this (`10m`, `1h`, seconds) when it arrives goes
    to the backfill queue, which workers take only when the live queue is empty; 0 = every webhook is live."""
    sync_stale_after_seconds: float = Field(
        6 * 3600, validation_alias=AliasChoices("SYNCTRACK_SYNC_STALE_AFTER", "SYNCTRACK_SYNC_STALE_AFTER_SECONDS")
    )
    """`SYNCTRACK_SYNC_STALE_AFTER`: seconds (or `90m`, `6h`) a sync may stay active before it is marked stale."""
    sync_stale_check_seconds: float = 60.0
    """How often the stale-sync job runs; 0 = off."""
    freshness_after_seconds: float = Field(
        86_400,
        gt=0,
        validation_alias=AliasChoices("SYNCTRACK_FRESHNESS_AFTER", "SYNCTRACK_FRESHNESS_AFTER_SECONDS"),
    )
    """`SYNCTRACK_FRESHNESS_AFTER`: how old (`24h`, `30m`, `2d`, seconds) a last successful sync may be."""
    freshness_overrides: Annotated[dict[str, float], NoDecode] = {}
    """`SYNCTRACK_FRESHNESS_OVERRIDES`: per data type, e.g. `banking-transactions=6h,invoices=48h`."""
    freshness_check_seconds: float = 60.0
    """How often the freshness check runs; 0 = off."""
    deauthorize_after_seconds: float = Field(
        90 * 86400,
        gt=0,
        validation_alias=AliasChoices("SYNCTRACK_DEAUTHORIZE_AFTER", "SYNCTRACK_DEAUTHORIZE_AFTER_SECONDS"),
    )
    """`SYNCTRACK_DEAUTHORIZE_AFTER`: how long (`90d`) Codat lets a connection go without a sync before it may
    deauthorize it; a connection's `deauthorization_risk_at` is its last sync or link plus this."""
    keepalive_after_seconds: float = Field(
        30 * 86400,
        ge=0,
        validation_alias=AliasChoices("SYNCTRACK_KEEPALIVE_AFTER", "SYNCTRACK_KEEPALIVE_AFTER_SECONDS"),
    )
    """`SYNCTRACK_KEEPALIVE_AFTER`: a Linked connection with no completed sync and no keep-alive refresh for this
    long (`30d`) gets one refresh, so its token does not expire; 0 = off. Needs a Codat API key."""
    keepalive_data_type: str = "company"
    """`SYNCTRACK_KEEPALIVE_DATA_TYPE`: the data type a keep-alive refresh asks Codat for."""
    keepalive_check_seconds: float = 3600.0
    """`SYNCTRACK_KEEPALIVE_CHECK_SECONDS`: how often the keep-alive job looks for connections to refresh; 0 = off."""
    freshness_schedule_factor: float = Field(1.5, gt=0)
    """A data type's threshold from Codat's `syncSchedule` (hours) is the schedule times this factor."""

    bundles: Annotated[dict[str, list[str]], NoDecode] = {}
    """`SYNCTRACK_BUNDLES`: named sets of data types read together, e.g. `ar=invoices,payments;close=balanceSheet`."""
    # Platform incidents
    incident_window_seconds: float = Field(
        900, gt=0, validation_alias=AliasChoices("SYNCTRACK_INCIDENT_WINDOW", "SYNCTRACK_INCIDENT_WINDOW_SECONDS")
    )
    """`SYNCTRACK_INCIDENT_WINDOW`: the span of results' completion times (`15m`, seconds) incidents are judged over."""
    incident_min_connections: int = Field(5, ge=1)
    """Distinct connections (of at least 2 companies) whose results failed in the window before a platform has an
    incident."""
    incident_failure_share: float = Field(0.5, gt=0, le=1)
    """The fraction of a platform's results in the window that must have failed for an incident to open; it closes
    below half of this."""
    incident_check_seconds: float = 30.0
    """`SYNCTRACK_INCIDENT_CHECK_SECONDS`: how often (`30s`, seconds) incidents are checked besides at fold time, and
    the refreshes after one taken; 0 turns both off."""
    incident_auto_refresh: bool = False
    """`SYNCTRACK_INCIDENT_AUTO_REFRESH`: refresh what an incident left failed once it closes. Unset, on when
    `codat_api_key` is set."""

    # Stream
    stream_retention_hours: int = 24
    stream_max_changes: int = 100_000
    stream_heartbeat_seconds: float = 15.0
    stream_client_buffer: int = 1_000
    stream_token_in_query: bool = False
    stream_send_timeout_seconds: float = 30.0
    """A client whose socket accepts nothing for this long is disconnected."""

    # Codat API
    codat_base_url: str = "https://api.codat.io"
    codat_api_key: str = ""
    codat_timeout_seconds: float = 15.0
    codat_max_retries: int = 4
    codat_max_retry_after_seconds: float = 30.0
    """The longest `Retry-After` a request waits out; a longer one is answered as `codat_unavailable`."""
    reconcile_every_seconds: float = Field(
        0, validation_alias=AliasChoices("SYNCTRACK_RECONCILE_EVERY", "SYNCTRACK_RECONCILE_EVERY_SECONDS")
    )
    """`SYNCTRACK_RECONCILE_EVERY`: seconds (or `90s`, `5m`, `1h`) between reconciliation runs; 0 = off. Unset, it is
    6 hours when `codat_api_key` is set and off without one."""
    reconcile_lookback_hours: float = 72.0
    """How far back reconciliation reads Codat's pull-operation history."""
    reconcile_discover: bool = False
    reconcile_overdue_check_seconds: float = Field(20.0, ge=0)
    """How often (seconds) the companies asked for because a data type turned overdue are reconciled, each at most
    once an hour; 0 = off. Needs a Codat API key; independent of `reconcile_every_seconds`."""
    """Periodic reconciliation also visits the companies Codat lists that the ledger lacks."""

    # Ops
    raw_event_retention_days: int = 90
    log_format: Literal["kv", "json"] = "kv"
    log_level: str = "INFO"

    # Security
    admin_token_hashes: CommaList = []
    """`sha256:<hex>` hashes of the admin/service tokens (`synctrack token hash`)."""
    token_signing_key: str = ""
    """Signs company-scoped tokens (HMAC-SHA256); at least 32 characters. Changing it revokes them all."""
    token_max_ttl_seconds: float = Field(
        7 * 86400, validation_alias=AliasChoices("SYNCTRACK_TOKEN_MAX_TTL", "SYNCTRACK_TOKEN_MAX_TTL_SECONDS")
    )
    """`SYNCTRACK_TOKEN_MAX_TTL`: the longest lifetime a company-scoped token can be minted with (`1h`, `7d`)."""
    auth_disabled: bool = False
    """Serve `/v1/*` without tokens to loopback clients only; ignored when admin token hashes are set."""
    failure_limit_per_minute: int = 60
    """Failed authentications (bad tokens, bad webhook signatures) a source may make per minute; 0 = no limit."""
    actions_per_minute: int = Field(default=10, ge=0)
    """Actions against Codat (refresh, unlink, delete, reconnect) one company's tokens may take per minute,
    across every web process; admin tokens are not limited; 0 = no limit."""
    cors_origins: CommaList = []
    metrics_require_token: bool = False
    max_admin_body_bytes: int = Field(MIB, ge=1)
    """The largest JSON body an API route reads (every route that takes one is an admin's); 413 beyond."""

    # Outbound subscriptions
    subscriptions_allow_http: bool = False
    """Accept `http://` subscription URLs (local development only)."""
    subscriptions_allow_private: bool = False
    """Accept URLs on private, loopback and link-local addresses (local development only)."""
    subscriptions_timeout_seconds: float = 15.0
    subscriptions_retry_min_seconds: float = 5.0
    """First retry delay; each later one doubles (with jitter) up to `subscriptions_retry_max_seconds`."""
    subscriptions_retry_max_seconds: float = 6 * 3600
    subscriptions_retry_window_seconds: float = 24 * 3600
    """A delivery is retried until its next attempt would fall this long after its first."""
    subscriptions_disable_after_seconds: float = 5 * 86400
    """A subscription whose attempts have all failed for this long is disabled (`subscription.disabled`)."""
    subscriptions_secret_overlap_seconds: float = 24 * 3600
    """After a rotation the previous secret keeps signing alongside the new one for this long."""
    subscriptions_dispatcher: bool = True
    """Run the dispatcher thread (change stream -> deliveries) in this worker process."""
    subscriptions_sweep_every_seconds: float = 60.0
    """Re-queue deliveries whose queue message was lost, prune old ones; 0 = off."""
    subscriptions_delivery_retention_days: int = 30

    @field_validator(
        "webhook_secrets",
        "webhook_allowed_networks",
        "trusted_proxies",
        "admin_token_hashes",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("freshness_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: object) -> object:
        return parse_overrides(value) if isinstance(value, str) else value

    @field_validator("bundles", mode="before")
    @classmethod
    def _bundles(cls, value: object) -> object:
        return parse_bundles(value) if isinstance(value, str) else value

    @field_validator(
        "reconcile_every_seconds",
        "sync_stale_after_seconds",
        "token_max_ttl_seconds",
        "freshness_after_seconds",
        "deauthorize_after_seconds",
        "keepalive_after_seconds",
        "incident_window_seconds",
        "incident_check_seconds",
        "live_window_seconds",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @model_validator(mode="after")
    def _reconcile_when_a_key_is_set(self) -> Self:
        if self.codat_api_key and "reconcile_every_seconds" not in self.model_fields_set:
            self.reconcile_every_seconds = RECONCILE_EVERY_WITH_A_KEY_SECONDS
        if self.codat_api_key and "incident_auto_refresh" not in self.model_fields_set:
            self.incident_auto_refresh = True
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
