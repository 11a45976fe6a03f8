"""On SQLite, the JSON API's reads and the stream's snapshots do not wait for a writer (`workers/runtime/db.py:reader`).

Every write transaction begins IMMEDIATE and holds the database's write lock until it ends; a worker folding
a batch holds it for a while. A read that took the lock too would wait up to the busy timeout (30 s) behind it.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from starlette.testclient import TestClient

from schemas.settings import Settings
from service.app import create_app
from service.common.services import services
from service.stream.response import load_snapshot
from service.stream.subscriber import StreamFilter
from tests.support.auth import ADMIN_HEADERS
from workers.runtime.db import upgrade


def test_api_reads_and_a_snapshot_are_answered_while_a_writer_holds_the_lock(embedded_settings: Settings) -> None:
    upgrade(embedded_settings.database_url)
    app = create_app(embedded_settings)
    path = embedded_settings.database_url.removeprefix("sqlite:///")
    answers: dict[str, Any] = {}

    with TestClient(app) as client:
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO companies (id, name, name_stamp) VALUES ('co-held', 'Held', '')")  # uncommitted

        def read() -> None:
            answers["companies"] = client.get("/v1/companies", headers=ADMIN_HEADERS)
            answers["snapshot"] = load_snapshot(services(app).reads, StreamFilter())

        reading = threading.Thread(target=read, daemon=True)
        reading.start()
        reading.join(10)
        still_waiting = reading.is_alive()
        writer.execute("COMMIT")
        reading.join(40)
        writer.close()
        after = client.get("/v1/companies", headers=ADMIN_HEADERS).json()

    assert not still_waiting, "a read waited for the writer's lock"
    assert answers["companies"].status_code == 200
    assert answers["companies"].json()["items"] == []  # the uncommitted row is not seen
    assert answers["snapshot"]["companies"] == []
    assert [company["id"] for company in after["items"]] == ["co-held"]
