"""The per-process reader and its subscribers, against the real Redis (and the embedded one)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import fakeredis
import pytest
import redis
import redis.asyncio
from sqlalchemy import Engine

from service.security.revocation import RevocationList
from service.stream.fanout import TOKEN_CHECK_SECONDS, Fanout, StreamUnavailable
from service.stream.response import events
from service.stream.subscriber import (
    HEARTBEAT,
    SLOW_CLIENT,
    STREAM_INTERRUPTED,
    TOKEN_EXPIRED,
    TOKEN_REVOKED,
    StreamChange,
    StreamFilter,
    Subscriber,
)
from workers.ledger.changes import ChangeFeed, FeedEntry, stream_key


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def entry(company: str = "co-1", connection: str = "conn-1", name: str = "connection.updated") -> FeedEntry:
    return FeedEntry(name, company, connection, {"id": connection, "event_id": "msg_1"})


async def publish(client: redis.asyncio.Redis, namespace: str, *entries: FeedEntry) -> list[str]:
    ids = []
    for item in entries:
        raw = await client.xadd(stream_key(namespace), item.fields())  # type: ignore[arg-type]
        ids.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    return ids


def frames_in(chunk: bytes) -> list[bytes]:
    return [frame + b"\n\n" for frame in chunk.split(b"\n\n") if frame]


def ids_in(chunk: bytes) -> list[str]:
    return [line[4:].decode() for line in chunk.split(b"\n") if line.startswith(b"id: ")]


async def received(sub: Subscriber, count: int, timeout: float = 5) -> list[bytes]:
    """The next `count` change frames the subscriber hands its client (heartbeats skipped)."""
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = await asyncio.wait_for(sub.next_chunk(), timeout)
        assert chunk is not None, "the stream ended"
        frames += [frame for frame in frames_in(chunk) if frame != HEARTBEAT]
    assert len(frames) == count, frames
    return frames


async def settle(predicate: Callable[[], Any], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.redis
def test_each_subscriber_receives_exactly_the_changes_its_filter_matches(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=100)
        await fanout.start()
        everything = fanout.subscribe(StreamFilter())
        company = fanout.subscribe(StreamFilter(company_ids=frozenset({"co-1"})))
        connections = fanout.subscribe(StreamFilter(connection_ids=frozenset({"conn-2", "conn-3"})))
        both = fanout.subscribe(StreamFilter(frozenset({"co-2"}), frozenset({"conn-3"})))
        ids = await publish(
            client,
            namespace,
            entry("co-1", "conn-1"),
            entry("co-1", "conn-2"),
            entry("co-2", "conn-3"),
            entry("co-3", "conn-3"),
        )
        assert ids_in(b"".join(await received(everything, 4))) == ids
        assert ids_in(b"".join(await received(company, 2))) == ids[:2]
        assert ids_in(b"".join(await received(connections, 3))) == ids[1:]
        assert ids_in(b"".join(await received(both, 1))) == [ids[2]]
        for sub in (everything, company, connections, both):
            assert sub.depth == 0
        await fanout.stop()
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_a_change_becomes_one_sse_frame_with_the_stream_id_and_the_published_data(
    redis_url: str, namespace: str
) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=10)
        await fanout.start()
        sub = fanout.subscribe(StreamFilter())
        [entry_id] = await publish(client, namespace, entry(name="sync.started"))
        [frame] = await received(sub, 1)
        id_line, event_line, data_line, *_ = frame.decode().split("\n")
        assert id_line == f"id: {entry_id}"
        assert event_line == "event: sync.started"
        assert json.loads(data_line.removeprefix("data: ")) == {"id": "conn-1", "event_id": "msg_1"}
        await fanout.stop()
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_the_reader_starts_at_the_tail_and_never_hands_out_older_changes(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        await publish(client, namespace, entry(), entry())
        fanout = Fanout(client, namespace, capacity=10)
        await fanout.start()
        sub = fanout.subscribe(StreamFilter())
        [new] = await publish(client, namespace, entry())
        assert ids_in(b"".join(await received(sub, 1))) == [new]
        assert sub.depth == 0
        await fanout.stop()
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_a_full_buffer_is_emptied_and_its_subscriber_told_it_lost_changes(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=3)
        await fanout.start()
        slow = fanout.subscribe(StreamFilter())
        keeping_up = fanout.subscribe(StreamFilter())
        ids = await publish(client, namespace, *[entry() for _ in range(3)])
        assert ids_in(b"".join(await received(keeping_up, 3))) == ids
        more = await publish(client, namespace, entry())
        assert ids_in(b"".join(await received(keeping_up, 1))) == more
        await settle(lambda: slow.lost is not None)
        assert slow.lost == SLOW_CLIENT
        assert slow.depth == 0
        assert await slow.next_chunk() is None
        assert fanout.overflows == 1
        assert keeping_up.lost is None
        await fanout.stop()
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_unsubscribing_and_stopping_leave_no_subscriber_buffer_or_task_behind(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=10)
        await fanout.start()
        before = len(asyncio.all_tasks())
        filters = [StreamFilter(), StreamFilter(frozenset({"co-1"})), StreamFilter(connection_ids=frozenset({"c"}))]
        subs = [fanout.subscribe(filters[i % 3]) for i in range(30)]
        waiters = [asyncio.create_task(sub.next_chunk()) for sub in subs]
        assert fanout.subscriber_count == 30
        for sub in subs:
            fanout.unsubscribe(sub)
            fanout.unsubscribe(sub)
        assert await asyncio.gather(*waiters) == [None] * 30
        assert fanout.subscriber_count == 0
        await publish(client, namespace, entry("co-1", "c"))
        await asyncio.sleep(0.2)
        assert fanout.buffered == 0
        assert len(asyncio.all_tasks()) == before
        await fanout.stop()
        assert not fanout.running
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_a_client_resumes_from_an_id_still_in_the_stream_and_resets_otherwise(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=10)
        assert await fanout.resume_point("0-0") == "0-0"
        assert await fanout.resume_point("12-0") is None
        ids = await publish(client, namespace, *[entry() for _ in range(5)])
        assert await fanout.resume_point(ids[1]) == ids[1]
        assert await fanout.resume_point("0-0") == "0-0"
        assert await fanout.resume_point("not-an-id") is None
        assert await fanout.resume_point("99999999999999-0") is None
        await client.xtrim(stream_key(namespace), minid=ids[3], approximate=False)
        assert await fanout.resume_point(ids[1]) is None
        assert await fanout.resume_point("0-0") is None
        assert await fanout.resume_point(ids[3]) == ids[3]
        await client.xtrim(stream_key(namespace), maxlen=0, approximate=False)
        assert await fanout.resume_point(ids[4]) == ids[4]
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_clients_reset_when_the_readers_position_vanished_from_redis(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=10)
        [first] = await publish(client, namespace, entry())
        fanout.position = await fanout.tail()  # where a started reader stands; none runs to race the check below
        sub = fanout.subscribe(StreamFilter())
        await client.delete(stream_key(namespace))  # a Redis that restarted without its data
        await asyncio.sleep(0.01)  # its first new id is then later than ours, not the same id by chance
        [second] = await publish(client, namespace, entry())
        fanout.position = first
        await fanout._resume_after_interruption()
        assert sub.lost == STREAM_INTERRUPTED
        assert fanout.position == second
        await fanout.stop()
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_a_fault_while_handing_out_resets_every_client_and_the_reader_reads_on(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=100)
        await fanout.start()

        class Broken(StreamFilter):
            def matches(self, company_id: str, connection_id: str) -> bool:
                raise RuntimeError("a fault in handing out")

        faulty = fanout.subscribe(Broken(company_ids=frozenset({"co-1"})))
        healthy = fanout.subscribe(StreamFilter())
        await publish(client, namespace, entry())
        await settle(lambda: healthy.lost)
        assert (faulty.lost, healthy.lost) == (STREAM_INTERRUPTED, STREAM_INTERRUPTED)
        assert await healthy.next_chunk() is None, "the client is told to reset"
        fanout.unsubscribe(faulty)
        fresh = fanout.subscribe(StreamFilter())
        [sent] = await publish(client, namespace, entry())
        assert ids_in(b"".join(await received(fresh, 1))) == [sent] and fanout.running
        await fanout.stop()
        await client.aclose()

    run(scenario)


def test_a_reader_whose_cancellation_the_redis_client_turned_into_an_error_still_ends() -> None:
    class SwallowingRedis:
        """What redis-py can do when a cancellation lands mid-read: drop the connection and raise its own error."""

        async def xinfo_stream(self, key: str) -> dict[str, Any]:
            return {"last-generated-id": b"0-0"}

        async def xread(self, *args: Any, **kwargs: Any) -> Any:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise redis.ConnectionError("Connection closed by server.") from None

    async def scenario() -> None:
        fanout = Fanout(cast(redis.asyncio.Redis, SwallowingRedis()), "ns", capacity=10)
        await fanout.start()
        await asyncio.sleep(0.05)
        reader = fanout._task
        assert reader is not None
        reader.cancel()
        await asyncio.wait_for(asyncio.wait({reader}), 2)
        assert reader.done() and not fanout.running

    run(scenario)


def test_the_embedded_redis_wakes_the_reader_when_a_worker_thread_publishes() -> None:
    """fakeredis's blocking XREAD works across threads, so embedded mode needs no polling."""

    async def scenario() -> None:
        server = fakeredis.FakeServer()
        fanout = Fanout(fakeredis.FakeAsyncRedis(server=server), "dev", capacity=10)
        await fanout.start()
        sub = fanout.subscribe(StreamFilter())
        feed = ChangeFeed(fakeredis.FakeRedis(server=server), "dev", 1000, 3600)
        started = time.monotonic()
        threading.Timer(0.2, feed.publish, args=[[entry(name="sync.completed")]]).start()
        [frame] = await received(sub, 1, timeout=2)
        assert b"event: sync.completed" in frame
        assert time.monotonic() - started < 1.0
        await fanout.stop()

    run(scenario)


def test_subscribing_before_the_stream_is_reachable_is_refused() -> None:
    fanout = Fanout(redis.asyncio.Redis(port=1), "none", capacity=1)
    with pytest.raises(StreamUnavailable):
        fanout.subscribe(StreamFilter())


@pytest.mark.redis
def test_clients_are_let_go_and_new_ones_refused_once_the_server_starts_to_stop(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        stopping = False
        fanout = Fanout(client, namespace, capacity=10, exiting=lambda: stopping)
        await fanout.start()
        sub = fanout.subscribe(StreamFilter())
        waiting = asyncio.create_task(sub.next_chunk())
        await asyncio.sleep(0.1)
        assert not waiting.done()
        stopping = True
        assert await asyncio.wait_for(waiting, 2) is None
        assert fanout.subscriber_count == 0
        with pytest.raises(StreamUnavailable):
            fanout.subscribe(StreamFilter())
        await fanout.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        await client.aclose()

    run(scenario)


@pytest.mark.redis
def test_the_watchdog_gives_idle_clients_heartbeats_and_stops_stuck_sends(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        fanout = Fanout(client, namespace, capacity=10, heartbeat_seconds=0.3, send_timeout_seconds=0.6)
        await fanout.start()
        idle = fanout.subscribe(StreamFilter())
        started = time.monotonic()
        assert await asyncio.wait_for(idle.next_chunk(), 2) == HEARTBEAT
        assert 0.3 <= time.monotonic() - started < 1.5

        stuck = fanout.subscribe(StreamFilter())

        async def blocked_send() -> None:
            stuck.sending_since = asyncio.get_running_loop().time()
            await asyncio.sleep(60)

        stuck.task = asyncio.create_task(blocked_send())
        await asyncio.wait({stuck.task}, timeout=3)
        assert stuck.task.cancelled()
        assert stuck.timed_out
        assert not idle.timed_out
        await fanout.stop()
        await client.aclose()

    run(scenario)


def test_a_clients_stream_ends_when_its_token_is_revoked_or_expires_and_no_other_client_is_touched() -> None:
    async def scenario() -> None:
        client = fakeredis.FakeAsyncRedis()
        revocations = RevocationList(client, "ns", max_ttl_seconds=3600)
        fanout = Fanout(client, "ns", capacity=10, heartbeat_seconds=0, revocations=revocations)
        await fanout.start()
        company = frozenset({"co-1"})
        revoked = fanout.subscribe(StreamFilter(company), "tok-revoked", time.time() + 600)
        twin = fanout.subscribe(StreamFilter(company), "tok-revoked", time.time() + 600)
        expiring = fanout.subscribe(StreamFilter(company), "tok-expiring", time.time() + 1)
        kept = fanout.subscribe(StreamFilter(company), "tok-kept", time.time() + 600)
        admin = fanout.subscribe(StreamFilter())
        waiting = {sub: asyncio.create_task(sub.next_chunk()) for sub in (revoked, twin, expiring, kept, admin)}

        started = time.monotonic()
        await revocations.revoke("tok-revoked", "admin:test")
        assert await asyncio.wait_for(waiting[revoked], TOKEN_CHECK_SECONDS + 1) is None
        assert await asyncio.wait_for(waiting[twin], 0.1) is None
        assert revoked.lost == twin.lost == TOKEN_REVOKED
        assert await asyncio.wait_for(waiting[expiring], 2) is None
        assert expiring.lost == TOKEN_EXPIRED
        assert time.monotonic() - started < 2.5

        [change] = await publish(client, "ns", entry("co-1"))
        for sub in (kept, admin):
            assert not sub.lost
            got = await asyncio.wait_for(waiting[sub], 2)
            assert got is not None and ids_in(got) == [change]
        await fanout.stop()
        assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("synctrack-stream")]

    run(scenario)


def test_a_subscriber_skips_changes_its_opening_event_already_covers() -> None:
    async def scenario() -> None:
        sub = Subscriber(StreamFilter(), capacity=5, last_sent=0.0)
        sub.skip_through = (100, 1)
        for ident in ("100-0", "100-1", "100-2", "101-0"):
            change = StreamChange.from_entry(ident, {"event": "sync.started", "data": "{}"})
            assert change is not None
            sub.offer(change)
        chunk = await sub.next_chunk()
        assert chunk is not None and ids_in(chunk) == ["100-2", "101-0"]
        sub.close()
        assert await sub.next_chunk() is None

    run(scenario)


def started(ident: str) -> StreamChange:
    change = StreamChange.from_entry(ident, {"event": "sync.started", "data": "{}"})
    assert change is not None
    return change


def test_changes_buffered_while_a_client_was_busy_reach_it_in_one_chunk_in_order_without_repeats() -> None:
    async def scenario() -> None:
        fanout = Fanout(fakeredis.FakeAsyncRedis(), "ns", capacity=10)
        sub = Subscriber(StreamFilter(), capacity=10, last_sent=0.0)
        source = events(fanout, sub, cast(Engine, None), "5-0", SLOW_CLIENT)
        assert b"event: reset" in await anext(source)
        sub.offer(started("6-0"))
        sub.offer(started("7-0"))
        assert await anext(source) == started("6-0").frame + started("7-0").frame
        sub.offer(started("7-0"))  # an overlap with what was sent (catch-up and buffer): not sent again
        sub.offer(started("8-0"))
        assert await anext(source) == started("8-0").frame
        await source.aclose()

    run(scenario)


@pytest.mark.redis
def test_the_feed_trims_changes_older_than_the_retention_window(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = stream_key(namespace)
    two_hours_ago = int((time.time() - 7200) * 1000)
    for seq in range(500):
        client.xadd(key, entry().fields(), id=f"{two_hours_ago}-{seq}")  # type: ignore[arg-type]
    ChangeFeed(client, namespace, max_changes=100_000, retention_seconds=3600).publish([entry()])
    remaining: Any = client.xrange(key)
    old = [entry_id for entry_id, _ in remaining if entry_id.decode().startswith(str(two_hours_ago))]
    # Trimming is approximate (whole radix-tree nodes of up to 100 entries), never more than asked.
    assert len(old) < 100
    assert remaining[-1][0].decode() > f"{two_hours_ago}-499"


def test_with_no_client_the_watchdog_sleeps_until_one_subscribes(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[float] = []
    monkeypatch.setattr(Fanout, "check", lambda self, now, wall: checks.append(now))

    async def scenario() -> None:
        fanout = Fanout(fakeredis.FakeAsyncRedis(), "idle", capacity=10, heartbeat_seconds=1)
        await fanout.start()
        try:
            await asyncio.sleep(1.2)
            assert checks == [], "the watchdog woke with nobody to look after"
            sub = fanout.subscribe(StreamFilter())
            await settle(lambda: checks, timeout=3)
            fanout.unsubscribe(sub)
        finally:
            await fanout.stop()

    run(scenario)
