"""What the stream's tests share: the embedded settings with a migrated database and heartbeats out of the way."""

from __future__ import annotations

import pytest

from schemas.settings import Settings
from workers.runtime.db import upgrade


@pytest.fixture
def settings(embedded_settings: Settings) -> Settings:
    upgrade(embedded_settings.database_url)
    return embedded_settings.model_copy(update={"stream_heartbeat_seconds": 60})
