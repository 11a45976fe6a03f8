"""The per-stage latency of one benchmark run, from `/metrics`: `synctrack_event_latency_seconds{stage}` scraped
before and after the run, the difference of its bucket counts, and p50 and p99 read from that difference as
Prometheus's `histogram_quantile` reads them (linear within a bucket).

    before = scrape(port)
    ...  # the run
    print(breakdown(before, scrape(port)))
"""

from __future__ import annotations

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

from workers.runtime.metrics import LATENCY_STAGES

BUCKETS = "synctrack_event_latency_seconds_bucket"

Histograms = dict[str, dict[float, float]]
"""Per stage: cumulative count by upper bound (seconds, `inf` included)."""


def scrape(port: int, headers: dict[str, str] | None = None) -> Histograms:
    """The latency histograms `/metrics` of the web process on `port` shows now."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=30).text
    found: Histograms = {stage: {} for stage in LATENCY_STAGES}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == BUCKETS and sample.labels.get("stage") in found:
                found[sample.labels["stage"]][float(sample.labels["le"])] = sample.value
    return found


def quantile(q: float, cumulative: dict[float, float]) -> float:
    """The `q` quantile (seconds) of a cumulative histogram; NaN when it is empty. Beyond the largest finite
    bound the answer is that bound."""
    bounds = sorted(cumulative)
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def breakdown(before: Histograms, after: Histograms) -> str:
    """``stage p50/p99 ms (count)`` of every stage, for what was observed between the two scrapes; ``-`` for none."""
    parts = []
    for stage in LATENCY_STAGES:
        run = {bound: count - before[stage].get(bound, 0.0) for bound, count in after[stage].items()}
        count = run.get(math.inf, 0.0)
        if count <= 0:
            parts.append(f"{stage} -")
            continue
        parts.append(f"{stage} {quantile(0.5, run) * 1000:.1f}/{quantile(0.99, run) * 1000:.1f} ms ({count:,.0f})")
    return "; ".join(parts)
