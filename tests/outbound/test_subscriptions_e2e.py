"""Outbound subscriptions end to end: signed Codat webhooks into real `synctrack web` + `synctrack worker`
processes on the real Redis; a real local receiver, verifying every request with `svix`, must get each
matching change once per `webhook-id`, through 500s, timeouts, refused connections and a 410.
And the same path on `synctrack dev` (embedded Redis, in-process worker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from schemas.subscriptions import SUBSCRIPTION_DISABLED
from tests.support.auth import ADMIN_HEADERS
from tests.support.builders import connection_event, read_completed
from tests.support.services import ServiceProcess, free_port, start_web_and_worker, wait_for, wait_until_healthy
from tests.support.subscription_support import dispatcher_ready, post_webhook, service_env, stream_entries, subscribe
from tests.support.webhook_receiver import Received, WebhookReceiver
from workers.runtime.db import upgrade

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

COMPANY_A, COMPANY_B = "company-a", "company-b"


@pytest.fixture
def web_and_worker(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[str]:
    env = service_env(tmp_path, SYNCTRACK_REDIS_URL=redis_url, SYNCTRACK_REDIS_NAMESPACE=namespace)
    upgrade(env["SYNCTRACK_DATABASE_URL"])
    port = free_port()
    with ExitStack() as stack:
        start_web_and_worker(stack, env, tmp_path, port, processes=2, threads=4)
        base = f"http://127.0.0.1:{port}"
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: dispatcher_ready(client, namespace), timeout=30, message="dispatcher consumer group")
        yield base


def changes(client: redis.Redis, namespace: str) -> list[tuple[str, str, str]]:
    """(change id, event, company) of every ledger change on the stream."""
    return [
        (i.decode(), f[b"event"].decode(), f[b"company_id"].decode())
        for i, f in stream_entries(client, namespace)
        if f[b"event"] != b"subscription.disabled"
    ]


def expected(all_changes: list[tuple[str, str, str]], types: list[str] | None, companies: list[str] | None) -> set[str]:
    return {
        i
        for i, event, company in all_changes
        if (types is None or event in types) and (companies is None or company in companies)
    }


def delivered_ids(received: list[Received]) -> list[str]:
    return [r.body["id"] for r in received if r.answered == 204]


def processed_events(api: httpx.Client) -> int:
    return sum(1 for e in api.get("/v1/events?limit=500").json()["items"] if e["outcome"] == "processed")


def test_matching_changes_reach_each_receiver_signed_once_per_id_through_failures_and_410(
    web_and_worker: str, redis_url: str, namespace: str
) -> None:
    refused_port = free_port()
    with (
        WebhookReceiver(slow_seconds=2.0) as receiver,
        httpx.Client(base_url=web_and_worker, timeout=30, headers=ADMIN_HEADERS) as api,
    ):
        everything = subscribe(api, receiver.url("/all"))
        completed_a = subscribe(
            api, receiver.url("/completed-a"), event_types=["sync.completed"], company_ids=[COMPANY_A]
        )
        connections_b = subscribe(
            api, receiver.url("/connections-b"), event_types=["connection.updated"], company_ids=[COMPANY_B]
        )
        flaky = subscribe(api, receiver.url("/flaky"), company_ids=[COMPANY_A])
        slow = subscribe(api, receiver.url("/slow"), event_types=["connection.updated"], company_ids=[COMPANY_A])
        refused = subscribe(
            api, f"http://127.0.0.1:{refused_port}/late", event_types=["sync.completed"], company_ids=[COMPANY_A]
        )
        gone = subscribe(api, receiver.url("/gone"), company_ids=[COMPANY_B])
        rotated = subscribe(api, receiver.url("/rotated"), event_types=["sync.completed"])
        new_secret = api.post(f"/v1/subscriptions/{rotated['id']}/rotate-secret").json()["secret"]
        for path, sub in [
            ("/all", everything),
            ("/completed-a", completed_a),
            ("/connections-b", connections_b),
            ("/gone", gone),
        ]:
            receiver.expect(path, [sub["secret"]], script=[410] * 10 if path == "/gone" else None)
        receiver.expect("/flaky", [flaky["secret"]], script=[500, 500])
        receiver.expect("/slow", [slow["secret"]], script=["timeout"])
        receiver.expect("/rotated", [rotated["secret"], new_secret])

        first = connection_event("connection.connected", company_id=COMPANY_A, connection_id="conn-a")
        post_webhook(api, first, msg_id="msg_first")
        post_webhook(api, first, msg_id="msg_first")  # Codat's at-least-once: the same message again
        post_webhook(api, read_completed(company_id=COMPANY_A, connection_id="conn-a"))
        post_webhook(api, connection_event("connection.connected", company_id=COMPANY_B, connection_id="conn-b"))
        post_webhook(
            api, read_completed([("bankAccounts", "FetchError")], company_id=COMPANY_B, connection_id="conn-b")
        )

        wait_for(lambda: processed_events(api) == 4, timeout=30, message="4 distinct webhooks folded")
        all_changes = changes(redis.Redis.from_url(redis_url), namespace)
        want = {
            "/all": expected(all_changes, None, None),
            "/completed-a": expected(all_changes, ["sync.completed"], [COMPANY_A]),
            "/connections-b": expected(all_changes, ["connection.updated"], [COMPANY_B]),
            "/flaky": expected(all_changes, None, [COMPANY_A]),
            "/slow": expected(all_changes, ["connection.updated"], [COMPANY_A]),
            "/rotated": expected(all_changes, ["sync.completed"], None),
        }
        want_late = expected(all_changes, ["sync.completed"], [COMPANY_A])
        assert want["/completed-a"] and want["/connections-b"] and want["/completed-a"] < want["/flaky"] < want["/all"]
        late = WebhookReceiver(port=refused_port)  # the refused endpoint comes up late, knowing its secret
        late.expect("/late", [refused["secret"]])  # before it answers: a retry may be waiting to connect
        with late:
            wait_for(
                lambda: (
                    all(want[p] <= set(delivered_ids(receiver.at(p))) for p in want)
                    and want_late <= set(delivered_ids(late.at("/late")))
                ),
                timeout=40,
                interval=0.3,
                message="every matching change delivered",
            )
            received = {path: receiver.at(path) for path in want} | {"/late": late.at("/late")}
        want["/late"] = want_late

        for path, ids in want.items():
            ok = [r for r in received[path] if r.answered == 204 and r.body["type"] != SUBSCRIPTION_DISABLED]
            assert sorted(r.body["id"] for r in ok) == sorted(ids), f"{path}: every matching change once, nothing else"
            assert len({r.webhook_id for r in ok}) == len(ok), f"{path}: one webhook-id per change"
            assert all(r.verified and all(r.verified.values()) for r in received[path]), f"{path}: signatures"

        # Two 500s, each followed by a success of the same webhook-id; the log counts the attempts.
        answers: dict[str, list[int | str]] = {}
        for r in received["/flaky"]:
            answers.setdefault(r.webhook_id, []).append(r.answered)
        assert sorted(a for got in answers.values() for a in got if a != 204) == [500, 500]
        assert all(got[-1] == 204 and set(got[:-1]) <= {500} for got in answers.values())
        log = api.get(f"/v1/subscriptions/{flaky['id']}/deliveries?status=delivered").json()["items"]
        assert {d["id"]: d["attempts"] for d in log} == {i: len(got) for i, got in answers.items()}

        assert [r.answered for r in receiver.at("/slow")][:2] == ["timeout", 204]
        assert all(len(r.headers["webhook-signature"].split()) == 2 for r in receiver.at("/rotated"))

        # 410: the subscription is disabled, announced, and gets nothing more (attempts already in
        # flight when the first 410 came back may still arrive, and are answered 410 too).
        gone_before = receiver.at("/gone")
        assert gone_before and {r.answered for r in gone_before} == {410}
        assert api.get(f"/v1/subscriptions/{gone['id']}").json()["disabled_reason"] == "gone"
        announced = wait_for(
            lambda: [r.body for r in receiver.at("/all") if r.body["type"] == SUBSCRIPTION_DISABLED], timeout=10
        )
        assert [a["data"]["id"] for a in announced] == [gone["id"]]
        seen_b = len(receiver.at("/connections-b"))
        post_webhook(
            api, connection_event("connection.disconnected", minutes=30, company_id=COMPANY_B, connection_id="conn-b")
        )
        wait_for(lambda: len(receiver.at("/connections-b")) > seen_b, timeout=15, message="company B still delivered")
        assert len(receiver.at("/gone")) == len(gone_before)


def test_synctrack_dev_delivers_to_a_subscription_too(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(tmp_path)
    dev = ServiceProcess(["dev", "--port", str(port)], env, tmp_path, "dev")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, dev)
        with WebhookReceiver() as receiver, httpx.Client(base_url=base, timeout=30, headers=ADMIN_HEADERS) as api:
            sub = subscribe(api, receiver.url("/dev"), event_types=["sync.completed"])
            receiver.expect("/dev", [sub["secret"]])
            post_webhook(api, connection_event("connection.connected"))
            post_webhook(api, read_completed())

            wanted = {"banking-accounts", "banking-transactions"}
            got = wait_for(
                lambda: wanted <= {r.body["data"]["data_type"] for r in receiver.at("/dev")} and receiver.at("/dev"),
                timeout=20,
            )
        assert {r.body["type"] for r in got} == {"sync.completed"}
        assert len({r.body["id"] for r in got}) == len(got)
        assert all(r.verified == {sub["secret"]: True} for r in got)
    finally:
        dev.stop()
    assert "Traceback" not in dev.output(), dev.output()[-3000:]
