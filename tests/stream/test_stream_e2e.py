"""`GET /v1/stream` end to end: signed webhooks into real `synctrack web` / `synctrack worker` processes on
the real Redis, events read by a real streaming client (and a raw socket where the test must not read)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.auth import ADMIN_HEADERS, AUTH_ENV
from tests.support.builders import BASE_TIME, SECRET, connection_event, read_completed, signed_request
from tests.support.services import (
    REDIS_URL,
    ServiceProcess,
    free_port,
    redis_postgres_env,
    redis_unavailable,
    run_db_upgrade,
    wait_for,
    wait_until_healthy,
)
from tests.support.sse_client import SseClient, SseEvent, stream_status
from workers.ledger.changes import stream_key

FRESHNESS = frozenset({"connection.freshness_changed", "connection.health_changed"})
"""Freshness and health announcements (tested in tests/jobs/test_freshness_e2e.py, tests/api/test_health_e2e.py)
interleave with the changes these tests count; the first test checks where they fall, the others leave them out."""

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

CONNECTION_FIELDS = {"id", "company_id", "status", "sync_active", "last_sync_at", "platform_name", "metadata"}


def now_minutes() -> float:
    """The builders' `minutes` for "now", so no sync in these tests is old enough to go stale."""
    return (datetime.now(UTC) - BASE_TIME).total_seconds() / 60


def ids() -> tuple[str, str]:
    return f"co-{uuid.uuid4().hex[:8]}", f"conn-{uuid.uuid4().hex[:8]}"


def post(base: str, body: dict[str, Any]) -> str:
    raw, headers = signed_request(body)
    response = httpx.post(f"{base}/webhooks/codat", content=raw, headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return headers["webhook-id"]


def key(event: SseEvent) -> tuple[int, int]:
    assert event.id is not None
    ms, _, seq = event.id.partition("-")
    return int(ms), int(seq)


@contextmanager
def services(
    tmp_path: Path,
    env: dict[str, str],
    webs: int = 1,
    workers: int = 1,
    dev: bool = False,
    processes: list[ServiceProcess] | None = None,
) -> Iterator[list[str]]:
    """`webs` web processes and `workers` worker processes (or one `synctrack dev`); yields base URLs
    (and appends the web processes to `processes`)."""
    full_env = {"SYNCTRACK_WEBHOOK_SECRETS": SECRET, "SYNCTRACK_STREAM_HEARTBEAT_SECONDS": "1", **AUTH_ENV, **env}
    if not dev:
        upgraded = run_db_upgrade(full_env, tmp_path, timeout=60)
        assert upgraded.returncode == 0, upgraded.stderr
    with ExitStack() as stack:
        bases, procs = [], []
        for i in range(1 if dev else webs):
            port = free_port()
            args = ["dev" if dev else "web", "--host", "127.0.0.1", "--port", str(port)]
            proc = ServiceProcess(args, full_env, tmp_path, f"web{i}")
            stack.callback(proc.stop)
            bases.append(f"http://127.0.0.1:{port}")
            procs.append(proc)
        if processes is not None:
            processes.extend(procs)
        for i in range(0 if dev else workers):
            worker = ServiceProcess(["worker", "--processes", "1", "--threads", "2"], full_env, tmp_path, f"worker{i}")
            stack.callback(worker.stop)
        for base, proc in zip(bases, procs, strict=True):
            wait_until_healthy(base, proc)
        yield bases


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One web and one worker process on the real Redis and SQLite, shared by the tests that can share."""
    reason = redis_unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("stream")
    namespace = f"synctrack-test-{uuid.uuid4().hex[:10]}"
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": REDIS_URL,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
    }
    with services(tmp, env) as [base]:
        yield base, namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)


def wait_folded(base: str, connection_id: str, **expected: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        response = httpx.get(f"{base}/v1/connections/{connection_id}", headers=ADMIN_HEADERS, timeout=5)
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if all(body.get(k) == v for k, v in expected.items()) else None

    result: dict[str, Any] = wait_for(check, timeout=20, interval=0.1, message=f"{connection_id} folded")
    return result


def test_a_dashboard_gets_a_snapshot_then_every_change_in_order_as_the_api_shows_it(stack: tuple[str, str]) -> None:
    base, _ = stack
    (company_x, conn_x), (company_y, conn_y) = ids(), ids()
    connected = post(base, connection_event(minutes=now_minutes(), company_id=company_x, connection_id=conn_x))
    wait_folded(base, conn_x, sync_active=True)

    with (
        SseClient(f"{base}/v1/stream", ADMIN_HEADERS, ignore=FRESHNESS) as everything,
        SseClient(f"{base}/v1/stream?company_id={company_x}", ADMIN_HEADERS, ignore=FRESHNESS) as company,
        SseClient(f"{base}/v1/stream?connection_id=none-such,{conn_y}", ADMIN_HEADERS, ignore=FRESHNESS) as connection,
        SseClient(f"{base}/v1/stream", ADMIN_HEADERS) as announced,
    ):
        assert everything.status == 200
        snapshot = everything.next()
        assert snapshot.event == "snapshot"
        assert snapshot.id is not None
        listed = {c["id"]: c for c in snapshot.json()["connections"]}
        assert listed[conn_x]["sync_active"] is True
        assert [s["id"] for s in snapshot.json()["syncs"] if s["connection_id"] == conn_x] == [
            f"{connected}:{conn_x}:*"
        ]
        filtered = company.next().json()
        assert {c["id"] for c in filtered["connections"]} == {conn_x}
        assert [s["connection_id"] for s in filtered["syncs"]] == [conn_x]
        assert connection.next().json() == {
            "companies": [],
            "connections": [],
            "syncs": [],
            "truncated": False,
            "event_id": None,
        }

        completed = post(base, read_completed(minutes=now_minutes(), company_id=company_x, connection_id=conn_x))
        wait_folded(base, conn_x, sync_active=False)
        linked = post(base, connection_event(minutes=now_minutes(), company_id=company_y, connection_id=conn_y))

        seen = everything.take(6)
        assert [e.event for e in seen] == [
            "connection.updated",
            "sync.completed",
            "sync.completed",
            "sync.completed",
            "connection.updated",
            "sync.started",
        ]
        assert [key(e) for e in seen] == sorted(key(e) for e in seen)
        assert key(seen[0]) > key(snapshot)
        assert [e.json()["event_id"] for e in seen] == [completed] * 4 + [linked] * 2

        api_conn = httpx.get(f"{base}/v1/connections/{conn_x}", headers=ADMIN_HEADERS).json()
        streamed_conn = seen[0].json()
        assert {k: streamed_conn[k] for k in CONNECTION_FIELDS} == {k: api_conn[k] for k in CONNECTION_FIELDS}
        api_syncs = {
            s["id"]: s
            for s in httpx.get(f"{base}/v1/connections/{conn_x}/syncs", headers=ADMIN_HEADERS).json()["items"]
        }
        for event in seen[1:4]:
            sync = event.json()
            assert sync["phase"] == "succeeded"
            if sync["id"] in api_syncs:  # the two results; the third is the request they closed
                assert {**sync, "event_id": None} == {**api_syncs[sync["id"]], "event_id": None}
        assert {e.json()["id"] for e in seen[1:4]} == {*api_syncs, f"{connected}:{conn_x}:*"}
        assert seen[5].json()["connection_id"] == conn_y
        assert seen[5].json()["phase"] == "active"

        # Unfiltered by name, the same stream carries each freshness and health change right after its batch's
        # changes.
        assert announced.next().event == "snapshot"
        with_freshness = announced.take(10)
        assert [e.id for e in with_freshness if e.event not in FRESHNESS] == [e.id for e in seen]
        assert [(e.event, e.json()["connection"]["id"], e.json()["previous"], e.json()["current"])
                for e in with_freshness if e.event in FRESHNESS] == [
            ("connection.freshness_changed", conn_x, "pending", "fresh"),
            ("connection.health_changed", conn_x, "syncing", "healthy"),
            ("connection.freshness_changed", conn_y, None, "pending"),
            ("connection.health_changed", conn_y, None, "syncing"),
        ]  # fmt: skip
        assert [(e.id, e.event) for e in company.take(4)] == [(e.id, e.event) for e in seen[:4]]
        assert [(e.id, e.event) for e in connection.take(2)] == [(e.id, e.event) for e in seen[4:]]
        time.sleep(1.2)
        assert everything.drain(0.3) == company.drain(0.1) == connection.drain(0.1) == []
        assert everything.comments >= 1, "a heartbeat comment every SYNCTRACK_STREAM_HEARTBEAT_SECONDS"


def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed(stack: tuple[str, str]) -> None:
    base, _ = stack
    company_id, conn = ids()
    url = f"{base}/v1/stream?company_id={company_id}"
    with SseClient(url, ADMIN_HEADERS, ignore=FRESHNESS) as witness:
        start = witness.next()
        with SseClient(url, ADMIN_HEADERS, ignore=FRESHNESS) as client:
            assert client.next().event == "snapshot"
            post(base, connection_event(minutes=now_minutes(), company_id=company_id, connection_id=conn))
            before = client.take(2)
        missed_a = post(base, read_completed(minutes=now_minutes(), company_id=company_id, connection_id=conn))
        missed_b = post(
            base,
            connection_event(
                "connection.disconnected", minutes=now_minutes(), company_id=company_id, connection_id=conn
            ),
        )
        all_so_far = witness.take(2 + 4 + 1)
        assert {e.json()["event_id"] for e in all_so_far[2:]} == {missed_a, missed_b}

        with SseClient(
            url, headers={**ADMIN_HEADERS, "Last-Event-ID": before[-1].id or ""}, ignore=FRESHNESS
        ) as resumed:
            caught_up = resumed.take(5)
            assert [(e.id, e.event, e.data) for e in caught_up] == [(e.id, e.event, e.data) for e in all_so_far[2:]]
            live = post(
                base,
                connection_event(
                    "connection.reconnected", minutes=now_minutes(), company_id=company_id, connection_id=conn
                ),
            )
            fresh = resumed.take(2)
            assert {e.json()["event_id"] for e in fresh} == {live}
            assert resumed.drain(0.5) == []
        assert [(e.id, e.data) for e in witness.take(2)] == [(e.id, e.data) for e in fresh]

        # The query parameter works too (for clients that cannot set headers), from the snapshot's id.
        with SseClient(f"{url}&last_event_id={start.id}", ADMIN_HEADERS, ignore=FRESHNESS) as from_snapshot:
            everything = from_snapshot.take(9)
            assert [e.id for e in everything] == [e.id for e in [*all_so_far, *fresh]]
            assert from_snapshot.drain(0.5) == []


def test_an_id_trimmed_by_retention_or_unknown_gets_one_reset_then_live_changes(stack: tuple[str, str]) -> None:
    base, namespace = stack
    company_id, conn = ids()
    url = f"{base}/v1/stream?company_id={company_id}"
    with SseClient(url, ADMIN_HEADERS, ignore=FRESHNESS) as client:
        client.next()
        post(base, connection_event(minutes=now_minutes(), company_id=company_id, connection_id=conn))
        old = client.take(2)[-1]
    # Later changes the client never saw, then retention trims everything up to now.
    unseen = post(
        base,
        connection_event("connection.disconnected", minutes=now_minutes(), company_id=company_id, connection_id=conn),
    )
    writer = redis.Redis.from_url(REDIS_URL)
    wait_for(lambda: unseen in announced_event_ids(writer, namespace), message="published")
    newest = stream_entries(writer, namespace)[-1][0]
    writer.xtrim(stream_key(namespace), minid=f"{int(newest.split('-')[0]) + 1}-0", approximate=False)

    for last_event_id in (old.id or "", "not-an-id", "99999999999999-0"):
        with SseClient(url, headers={**ADMIN_HEADERS, "Last-Event-ID": last_event_id}, ignore=FRESHNESS) as client:
            reset = client.next()
            assert reset.event == "reset"
            assert reset.json()["reason"] == "last_event_id_not_found"
            assert reset.id is not None
            if last_event_id == old.id:
                live = post(
                    base,
                    connection_event(
                        "connection.reconnected", minutes=now_minutes(), company_id=company_id, connection_id=conn
                    ),
                )
                update, started = client.take(2)
                assert (update.event, update.json()["event_id"]) == ("connection.updated", live)
                assert (started.event, started.json()["event_id"]) == ("sync.started", live)
                assert key(update) > key(reset)
            assert client.drain(0.3) == []


def test_disconnected_clients_leave_no_subscriber_buffer_or_task_behind(stack: tuple[str, str]) -> None:
    base, _ = stack
    with SseClient(f"{base}/v1/stream", ADMIN_HEADERS, ignore=FRESHNESS) as warm:
        warm.next()
    idle = wait_for(lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=10, message="no clients")
    urls = [
        f"{base}/v1/stream",
        f"{base}/v1/stream?company_id=a,b",
        f"{base}/v1/stream?connection_id=c&connection_id=d",
    ]
    clients = [SseClient(urls[i % 3], ADMIN_HEADERS, ignore=FRESHNESS) for i in range(24)]
    for client in clients:
        client.next()
    busy = stream_status(base)
    assert busy["clients"] == 24
    # Each client holds two tasks: its request, and the one that waits for it to leave.
    assert busy["tasks"] - idle["tasks"] == 2 * 24, (idle, busy)
    for client in clients:
        client.close()
    head = httpx.head(f"{base}/v1/stream", headers=ADMIN_HEADERS, timeout=5)
    assert (head.status_code, head.headers["content-type"], head.content) == (
        200,
        "text/event-stream; charset=utf-8",
        b"",
    )
    after = wait_for(
        lambda: (s := stream_status(base))["clients"] == 0 and s["tasks"] == idle["tasks"] and s,
        timeout=10,
        message="every subscriber and task gone",
    )
    assert after["buffered"] == 0
    assert after["reader"] == "running"


def announced_event_ids(client: redis.Redis, namespace: str) -> set[str]:
    return {json.loads(fields[b"data"])["event_id"] for _, fields in stream_entries(client, namespace)}


def stream_entries(client: redis.Redis, namespace: str) -> list[tuple[str, dict[bytes, bytes]]]:
    raw: Any = client.xrange(stream_key(namespace))
    return [(entry_id.decode(), fields) for entry_id, fields in raw]


def read_raw(sock: socket.socket, timeout: float = 20) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def raw_stream(port: int) -> socket.socket:
    """A stream client with a tiny receive buffer that reads nothing until told to."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v1/stream HTTP/1.0\r\nAuthorization: {ADMIN_HEADERS['Authorization']}\r\n\r\n".encode())
    return sock


def publish(client: redis.Redis, namespace: str, count: int, size: int) -> None:
    """What the workers would publish: `count` changes of about `size` bytes, in one round trip."""
    pipe = client.pipeline(transaction=False)
    data = '{"id":"conn","event_id":"msg","padding":"' + "x" * size + '"}'
    for _ in range(count):
        fields = {"event": "connection.updated", "company_id": "co", "connection_id": "c", "data": data}
        pipe.xadd(stream_key(namespace), fields)  # type: ignore[arg-type]
    pipe.execute()


def test_a_slow_client_gets_a_reset_and_is_closed_and_a_stuck_one_is_dropped(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "SYNCTRACK_REDIS_URL": redis_url,
        "SYNCTRACK_REDIS_NAMESPACE": namespace,
        "SYNCTRACK_STREAM_CLIENT_BUFFER": "20",
        "SYNCTRACK_STREAM_SEND_TIMEOUT_SECONDS": "3",
        "SYNCTRACK_STREAM_HEARTBEAT_SECONDS": "60",
    }
    webs: list[ServiceProcess] = []
    writer = redis.Redis.from_url(redis_url)
    with services(tmp_path, env, workers=0, processes=webs) as [base]:
        port = int(base.rsplit(":", 1)[1])

        # Slow: 10 MB arrive at once, far more than the socket buffers and 20 buffered changes hold.
        slow = raw_stream(port)
        wait_for(lambda: stream_status(base)["clients"] == 1, timeout=10, message="one client")
        publish(writer, namespace, 5000, 2000)
        overflowed = wait_for(
            lambda: (s := stream_status(base))["overflows"] == 1 and s, timeout=20, message="overflow"
        )
        assert overflowed["buffered"] <= 20
        frames = [f for f in read_raw(slow).decode().split("\n\n") if "event: " in f]
        slow.close()
        assert frames[0].split("event: ")[1].startswith("snapshot")
        assert frames[-1].split("event: ")[1].startswith("reset")
        assert '"reason":"slow_client"' in frames[-1]
        assert sum("event: reset" in f for f in frames) == 1
        assert len(frames) - 2 < 5000, "changes past the buffer were dropped, not queued"
        wait_for(lambda: stream_status(base)["clients"] == 0, timeout=10, message="slow client gone")

        # Stuck: changes come in small batches the server keeps up with, until the socket is full and a
        # send waits; after SYNCTRACK_STREAM_SEND_TIMEOUT_SECONDS the client is dropped.
        stuck = raw_stream(port)
        wait_for(lambda: stream_status(base)["clients"] == 1, timeout=10, message="one client")
        for _ in range(10):
            publish(writer, namespace, 10, 100_000)
            time.sleep(0.1)
        time.sleep(0.5)
        assert stream_status(base)["clients"] == 1, "a stuck client is held until its send times out"
        after = wait_for(
            lambda: (s := stream_status(base))["clients"] == 0 and s, timeout=15, message="stuck client dropped"
        )
        assert after["buffered"] == 0
        assert "msg=stream_client_dropped reason=send_timeout" in webs[0].output()
        stuck.close()

        # Stopping the server ends its open streams at once, not after the 20 s graceful timeout.
        with SseClient(f"{base}/v1/stream", ADMIN_HEADERS, ignore=FRESHNESS) as last:
            last.next()
            started = time.monotonic()
            webs[0].stop()
            assert time.monotonic() - started < 5
            wait_for(lambda: last.ended, timeout=5, message="stream ended by the shutdown")


@pytest.mark.postgres
def test_two_web_processes_and_two_workers_deliver_every_change_once_to_clients_of_either(
    tmp_path: Path, redis_url: str, namespace: str, postgres_url: str
) -> None:
    env = redis_postgres_env(postgres_url, redis_url, namespace)
    with services(tmp_path, env, webs=2, workers=2) as bases:
        with (
            SseClient(f"{bases[0]}/v1/stream", ADMIN_HEADERS) as one,
            SseClient(f"{bases[1]}/v1/stream", ADMIN_HEADERS) as two,
        ):
            assert one.next().event == two.next().event == "snapshot"
            posted = []
            for i in range(8):
                company_id, conn = ids()
                base = bases[i % 2]
                posted.append(
                    post(base, connection_event(minutes=now_minutes(), company_id=company_id, connection_id=conn))
                )
                posted.append(
                    post(
                        bases[(i + 1) % 2],
                        read_completed(minutes=now_minutes() + 1, company_id=company_id, connection_id=conn),
                    )
                )
            writer = redis.Redis.from_url(redis_url)
            wait_for(lambda: announced_event_ids(writer, namespace) == set(posted), timeout=30, message="all folded")
            total = writer.xlen(stream_key(namespace))
            got_one, got_two = one.take(total, timeout=20), two.take(total, timeout=20)
            assert one.drain(0.5) == two.drain(0.1) == []
        stored = [(entry_id, fields[b"event"].decode()) for entry_id, fields in stream_entries(writer, namespace)]
        assert [(e.id, e.event) for e in got_one] == stored
        assert [(e.id, e.event, e.data) for e in got_two] == [(e.id, e.event, e.data) for e in got_one]
        assert {e.json()["event_id"] for e in got_one} == set(posted)


def test_synctrack_dev_streams_changes_and_announces_a_stale_sync(tmp_path: Path) -> None:
    env = {
        "SYNCTRACK_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "SYNCTRACK_SYNC_STALE_AFTER": "2",
        "SYNCTRACK_SYNC_STALE_CHECK_SECONDS": "1",
    }
    company_id, conn = ids()
    with (
        services(tmp_path, env, dev=True) as [base],
        SseClient(f"{base}/v1/stream?connection_id={conn}", ADMIN_HEADERS, ignore=FRESHNESS) as client,
    ):
        assert client.next().event == "snapshot"
        linked = post(base, connection_event(minutes=now_minutes(), company_id=company_id, connection_id=conn))
        started = client.take(2)
        assert [e.event for e in started] == ["connection.updated", "sync.started"]
        assert started[0].json()["sync_active"] is True
        assert started[1].json()["event_id"] == linked

        stale = client.take(2, timeout=15)
        assert [e.event for e in stale] == ["sync.failed", "connection.updated"]
        assert stale[0].json()["id"] == started[1].json()["id"]
        assert stale[0].json()["phase"] == "stale"
        assert stale[1].json()["sync_active"] is False
        assert httpx.get(f"{base}/v1/syncs/active", headers=ADMIN_HEADERS).json()["items"] == []

        post(
            base,
            read_completed(
                [("banking-accounts", "Complete")], minutes=now_minutes(), company_id=company_id, connection_id=conn
            ),
        )
        closed = client.take(3)
        assert {e.event for e in closed} == {"connection.updated", "sync.completed"}
        assert started[1].json()["id"] in {e.json()["id"] for e in closed if e.event == "sync.completed"}
