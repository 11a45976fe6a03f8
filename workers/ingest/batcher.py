"""Group commit for the worker: many messages, one transaction, an outcome for each.

Actor calls put their requests here and wait; one folding thread folds whatever is waiting (up to `max_batch`) in
one transaction, so nothing is acknowledged before it commits. A failed batch is retried one request at a time, so
one poisonous event cannot fail its neighbours.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from workers.ingest.handle import FoldRequest, Outcome

log = logging.getLogger("synctrack.batcher")

Handler = Callable[[Sequence[FoldRequest]], list[Outcome]]


class FoldBatcher:
    def __init__(self, handle: Handler, max_batch: int = 500, linger_seconds: float = 0.002) -> None:
        self.handle = handle
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self._pending: list[tuple[FoldRequest, Future[Outcome]]] = []
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, request: FoldRequest, timeout: float | None = None) -> Outcome:
        """Fold `request` in the next batch; return its outcome or raise its error."""
        result = self.submit_many([request], timeout)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def submit_many(self, requests: Sequence[FoldRequest], timeout: float | None = None) -> list[Outcome | Exception]:
        """Fold `requests` in the next batch; return each one's outcome, or the error that failed it alone."""
        futures: list[Future[Outcome]] = [Future() for _ in requests]
        with self._wakeup:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="synctrack-fold", daemon=True)
                self._thread.start()
            self._pending.extend(zip(requests, futures, strict=True))
            self._wakeup.notify()
        errors = [future.exception(timeout) for future in futures]
        return [e if isinstance(e, Exception) else f.result() for f, e in zip(futures, errors, strict=True)]

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                self._wakeup.wait_for(lambda: self._pending or self._stopping)
                if not self._pending:
                    return  # stopping
            # Let callers that are about to submit join this batch.
            threading.Event().wait(self.linger_seconds)
            with self._wakeup:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self._fold(batch)

    def _fold(self, batch: list[tuple[FoldRequest, Future[Outcome]]]) -> None:
        try:
            outcomes = self.handle([request for request, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("batch=%d result=retrying_one_by_one error=%r", len(batch), str(exc)[:300])
            for item in batch:
                self._fold([item])
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)
