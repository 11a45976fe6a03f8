"""Group commit in a worker: many callers, one handler call; a bad message fails alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workers.ingest.batcher import FoldBatcher
from workers.ingest.handle import FoldOutcome, FoldRequest, Outcome
from workers.ledger.changes import FeedEntry


class Recorder:
    def __init__(self, poison: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.poison = poison
        self.lock = threading.Lock()

    def __call__(self, requests: Sequence[FoldRequest]) -> list[Outcome]:
        ids = [r.message_id for r in requests]
        with self.lock:
            self.batches.append(ids)
        if self.poison in ids:
            raise RuntimeError(f"cannot fold {self.poison}")
        return [Outcome(FoldOutcome.PROCESSED, (FeedEntry("sync.completed", "", i, {}),)) for i in ids]


def described(outcome: Outcome) -> str:
    """`processed:<id>`: the outcome and the request it answers (the connection of its one entry)."""
    return f"{outcome.status}:{outcome.entries[0].connection_id}"


def submit_all(batcher: FoldBatcher, ids: list[str]) -> dict[str, str]:
    results: dict[str, str] = {}
    barrier = threading.Barrier(len(ids))

    def call(message_id: str) -> None:
        barrier.wait()
        try:
            results[message_id] = described(
                batcher.submit(FoldRequest(message_id, "{}", "2026-11-25T00:00:00Z"), timeout=10)
            )
        except RuntimeError as exc:
            results[message_id] = f"error:{exc}"

    threads = [threading.Thread(target=call, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    return results


def test_callers_that_arrive_together_share_one_transaction_and_get_their_own_outcome() -> None:
    handler = Recorder()
    batcher = FoldBatcher(handler, linger_seconds=0.05)
    ids = [f"m{i}" for i in range(20)]
    results = submit_all(batcher, ids)
    batcher.stop()
    assert results == {i: f"processed:{i}" for i in ids}
    assert len(handler.batches) < len(ids)  # coalesced
    assert sorted(i for batch in handler.batches for i in batch) == sorted(ids)


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_message_fails() -> None:
    handler = Recorder(poison="m3")
    batcher = FoldBatcher(handler, linger_seconds=0.05)
    ids = [f"m{i}" for i in range(8)]
    results = submit_all(batcher, ids)
    batcher.stop()
    assert results["m3"] == "error:cannot fold m3"
    assert {k: v for k, v in results.items() if k != "m3"} == {i: f"processed:{i}" for i in ids if i != "m3"}


def test_batches_never_exceed_the_limit() -> None:
    handler = Recorder()
    batcher = FoldBatcher(handler, max_batch=5, linger_seconds=0.05)
    submit_all(batcher, [f"m{i}" for i in range(23)])
    batcher.stop()
    assert max(len(b) for b in handler.batches) <= 5


def test_a_lone_message_is_folded_without_waiting_for_company() -> None:
    handler = Recorder()
    batcher = FoldBatcher(handler)
    assert described(batcher.submit(FoldRequest("solo", "{}", "2026-11-25T00:00:00Z"), timeout=5)) == "processed:solo"
    batcher.stop()
    assert handler.batches == [["solo"]]
