"""Every setting Synctrack reads, in one object, from ``SYNCTRACK_*`` environment variables.

Nothing else in the code reads the environment: the object is built once by a composition root
(the ASGI app factory, the worker entry point, the CLI) and passed down.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Synctrack's configuration; see README.md for what each variable does."""

    model_config = SettingsConfigDict(env_prefix="SYNCTRACK_", extra="ignore")

    # Receiver
    webhook_secrets: CommaList = []
    max_body_bytes: int = MIB
    dedupe_window_hours: int = 72
    webhook_allowed_networks: CommaList = []
    trusted_proxies: CommaList = []

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
    sync_stale_after_seconds: int = 6 * 3600

    # Stream
    stream_retention_hours: int = 24
    stream_max_changes: int = 100_000
    stream_heartbeat_seconds: float = 15.0
    stream_client_buffer: int = 1_000
    stream_token_in_query: bool = False

    # Codat API
    codat_base_url: str = "https://api.codat.io"
    codat_api_key: str = ""
    codat_timeout_seconds: float = 15.0
    codat_max_retries: int = 4
    reconcile_every_seconds: int = 0

    # Ops
    raw_event_retention_days: int = 90
    log_format: Literal["kv", "json"] = "kv"
    log_level: str = "INFO"

    # Security
    admin_token_hashes: CommaList = []
    token_signing_key: str = ""
    cors_origins: CommaList = []
    metrics_require_token: bool = False

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

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
