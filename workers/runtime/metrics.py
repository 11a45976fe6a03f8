"""Prometheus metrics: every definition in one place, correct across many web and worker processes.

Every process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and `/metrics` merges them. Metrics are
created on first use, so the directory is set first. Labels stay bounded (unknown event types count as ``other``).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from schemas.events import LEGACY_TYPES, Event

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

KNOWN_EVENT_TYPES = frozenset(
    {
        "company.created",
        "company.deleted",
        "connection.created",
        "connection.connected",
        "connection.disconnected",
        "connection.reconnected",
        "connection.failed",
        "connection.deleted",
        "read.completed",
        "read.completed.initial",
        "client.rateLimit.reached",
        "client.rateLimit.reset",
        *LEGACY_TYPES,
    }
)

SIGNATURE_REASONS = frozenset({"missing_signature_headers", "invalid_signature", "timestamp_out_of_tolerance"})

FOLD_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LATENCY_STAGES = ("queued", "committed", "published", "delivered")
LATENCY_SECONDS_BUCKETS = tuple(
    ms / 1000 for ms in (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)
)

LAST_FOLDED = "synctrack_last_folded_event_generated_timestamp_seconds"
LAST_ACCEPTED = "synctrack_webhook_last_accepted_timestamp_seconds"


def event_type_label(event_type: str | None) -> str:
    """A bounded label value: the type if Synctrack knows it, ``unknown`` if not parsed, else ``other``."""
    if not event_type or event_type == "unknown":
        return "unknown"
    return event_type if event_type in KNOWN_EVENT_TYPES else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get("prometheus_multiproc_dir") or None


def prepare_multiprocess_dir(namespace: str) -> str:
    """The metrics directory this process and its children share: ``PROMETHEUS_MULTIPROC_DIR`` if set, else
    ``{tmp}/synctrack-metrics-{namespace}`` (where `synctrack web` and `synctrack worker` on one host meet)."""
    path = multiprocess_dir()
    if not path:
        path = str(Path(tempfile.gettempdir()) / f"synctrack-metrics-{namespace}")
        os.environ[MULTIPROC_ENV] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    forget_dead_processes(path, everything=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes(path: str, everything: bool = False) -> int:
    """Drop the live gauges (or, when a process starts, `everything`) of processes that no longer exist; return
    how many processes. Several processes may do this at once: a file already gone is no error."""
    files: dict[int, list[str]] = defaultdict(list)
    for name in os.listdir(path):
        if name.endswith(".db") and (everything or name.startswith("gauge_live")):
            pid_text = name.removesuffix(".db").rsplit("_", 1)[-1]
            if pid_text.isdigit():
                files[int(pid_text)].append(name)
    dead = [pid for pid in files if not _alive(pid)]
    for pid in dead:
        for name in files[pid]:
            Path(path, name).unlink(missing_ok=True)
    return len(dead)


class Metrics:
    """The metric objects; docs/operations.md ("Metrics") says what each one means."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        if multiprocess_dir() and values.ValueClass is values.MutexValue:
            # prometheus-client was imported before the directory was set: choose again.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.webhooks = Counter(
            "synctrack_webhooks_received_total",
            "Webhooks received, by event type and result (accepted, duplicate, rejected with its reason).",
            ["event_type", "result", "reason"],
        )
        self.signature_failures = Counter(
            "synctrack_webhook_signature_failures_total",
            "Webhooks rejected for their signature headers, signature or timestamp.",
            ["reason"],
        )
        for reason in sorted(SIGNATURE_REASONS):  # a series at 0 from the start, so the first failure is an increase
            self.signature_failures.labels(reason)
        # A wall-clock time that only moves forward: the largest over the processes is the latest.
        self.last_accepted = Gauge(
            LAST_ACCEPTED,
            "When (unix seconds) a webhook was last accepted (202) by any web process; 0 until one is.",
            multiprocess_mode="max",
        )
        self.folded = Counter(
            "synctrack_events_folded_total",
            "Stored events handled by a worker, by event type and outcome (replays included).",
            ["event_type", "outcome", "replay"],
        )
        self.fold_seconds = Histogram(
            "synctrack_fold_duration_seconds",
            "Time to store and fold an event: the transaction of the batch it was folded in.",
            buckets=FOLD_SECONDS_BUCKETS,
        )
        self.last_folded = Gauge(
            LAST_FOLDED,
            "Generation time (unix seconds) of the newest event folded so far.",
            multiprocess_mode="max",
        )
        self.last_folded_at = 0.0
        self.event_latency = Histogram(
            "synctrack_event_latency_seconds",
            "Seconds from the receiver's receipt of a webhook to a stage: queued (taken by a worker), committed, "
            "published (its changes on the change feed), delivered (a change first written to a stream client).",
            ["stage"],
            buckets=LATENCY_SECONDS_BUCKETS,
        )
        for stage in LATENCY_STAGES:  # every stage's series exists (at 0) from the start
            self.event_latency.labels(stage)
        self.lock = threading.Lock()
        self.sse_clients = Gauge(
            "synctrack_sse_clients", "Server-sent-event clients connected.", multiprocess_mode="livesum"
        )
        self.codat_calls = Counter("synctrack_codat_api_calls_total", "Calls to Codat's API, by status.", ["status"])
        self.replay_enqueued = Counter("synctrack_replay_events_enqueued_total", "Stored events enqueued by replays.")
        self.dead_letters_redriven = Counter(
            "synctrack_dead_letters_redriven_total", "Dead letters moved back onto their queue."
        )
        self.pruned = Counter("synctrack_raw_events_pruned_total", "Raw event bodies removed by retention.")
        self.deliveries = Counter(
            "synctrack_subscription_deliveries_total",
            "Outbound webhook attempts, by outcome (delivered, retry, failed, gone, disabled).",
            ["outcome"],
        )
        self.subscriptions_disabled = Counter(
            "synctrack_subscriptions_disabled_total",
            "Subscriptions disabled automatically, by reason (gone: a 410; failing: failed too long).",
            ["reason"],
        )


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, created once on first use (threads may race to be first)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def record_webhook(event_type: str | None, result: str, reason: str = "", count: int = 1) -> None:
    """Count `count` webhook requests: `result` is accepted, duplicate or rejected (`reason`: the error code).
    An accepted one also sets the time of the last acceptance to now (the alert on silence reads it)."""
    m = metrics()
    m.webhooks.labels(event_type_label(event_type), result, reason).inc(count)
    if reason in SIGNATURE_REASONS:
        m.signature_failures.labels(reason).inc(count)
    if result == "accepted" and count > 0:
        m.last_accepted.set(time.time())


def record_folds(handled: Iterable[tuple[Event | str | None, str, bool]], started: datetime) -> None:
    """Count the events a worker handled in one batch: (event, outcome, replay) each, `event` the parsed event or
    the stored type; `started` is when the batch's transaction began. One increment per label set, not per event
    (each is a write to this process's metrics file)."""
    m = metrics()
    counts: Counter[tuple[str, str, str]] = Counter()
    newest = 0.0
    for event, outcome, replay in handled:
        event_type = event.event_type if isinstance(event, Event) else event
        counts[(event_type_label(event_type), outcome, "true" if replay else "false")] += 1
        if isinstance(event, Event) and outcome == "processed":
            newest = max(newest, event.generated_at.timestamp())
    for labels, count in counts.items():
        m.folded.labels(*labels).inc(count)
    seconds = max(0.0, (datetime.now(UTC) - started).total_seconds())
    for _ in range(sum(counts.values())):
        m.fold_seconds.observe(seconds)
    if newest:
        with m.lock:
            if newest > m.last_folded_at:
                m.last_folded_at = newest
                m.last_folded.set(newest)


def receipt_seconds(received_at: str | None) -> float | None:
    """A webhook's receipt time (ISO 8601, as queued) in unix seconds; None when absent or unparsable."""
    if not received_at:
        return None
    try:
        return datetime.fromisoformat(received_at).timestamp()
    except ValueError:
        return None


def record_latency(stage: str, receipts: Iterable[float], now: float | None = None) -> None:
    """Observe at `stage` the seconds from each receipt time (unix seconds) to `now` (default: this moment); a
    negative span (clocks of different hosts) counts as 0."""
    child = metrics().event_latency.labels(stage)
    at = time.time() if now is None else now
    for received in receipts:
        child.observe(max(0.0, at - received))


def record_codat_call(status: int | str) -> None:
    """Count one call to Codat's API: its HTTP status, or ``timeout`` / ``error`` when none came back."""
    valid = 100 <= status <= 599 if isinstance(status, int) else status in ("timeout", "error")
    metrics().codat_calls.labels(str(status) if valid else "error").inc()


def set_sse_clients(count: int) -> None:
    """Report how many SSE clients this process serves now."""
    metrics().sse_clients.set(count)


def record_replay_enqueued(count: int) -> None:
    metrics().replay_enqueued.inc(count)


def record_redriven(count: int) -> None:
    metrics().dead_letters_redriven.inc(count)


def record_pruned(count: int) -> None:
    metrics().pruned.inc(count)


DELIVERY_OUTCOMES = frozenset({"delivered", "retry", "failed", "gone", "disabled"})


def record_delivery(outcome: str, count: int = 1) -> None:
    """Count `count` outbound webhook attempts of one outcome (`skipped` and `released` are not attempts)."""
    if outcome in DELIVERY_OUTCOMES and count:
        metrics().deliveries.labels(outcome).inc(count)


def record_subscription_disabled(reason: str) -> None:
    metrics().subscriptions_disabled.labels(reason if reason in ("gone", "failing") else "other").inc()
