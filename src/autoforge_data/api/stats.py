"""The dashboard's numbers: totals since start, and a short history of 10-second windows.

Totals (:func:`summary`) come from the app's registry as it is. The history (:class:`History`)
keeps the last :data:`POINTS` windows: every :data:`INTERVAL` seconds a sampler (started with
the app, in memory only) snapshots the cumulative buckets and counters, and each point is the
*difference* from the previous snapshot, so a chart shows what happened in that window (a p99
since start barely moves after the first hour). Quantiles interpolate inside buckets like
Prometheus' ``histogram_quantile``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from autoforge_data.observability import Observability

INTERVAL = 10.0  # seconds per history window
POINTS = 60  # ten minutes of windows
Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), sorted


def buckets(hist: Histogram, **match: str) -> tuple[Buckets, float]:
    """Cumulative bucket counts summed over the series whose labels match, and the count."""
    sums: dict[float, float] = {}
    count = 0.0
    for family in hist.collect():
        for sample in family.samples:
            if any(sample.labels.get(k) != v for k, v in match.items()):
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                sums[le] = sums.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return sorted(sums.items()), count


def quantile_ms(q: float, bounds: Buckets) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets, in milliseconds (None: no data)."""
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in bounds:
        if cumulative >= rank:
            if upper == float("inf"):
                return round(lower * 1000, 3)  # the highest finite bound, as Prometheus does
            inside = cumulative - below
            frac = (rank - below) / inside if inside else 1.0
            return round((lower + (upper - lower) * frac) * 1000, 3)
        lower, below = upper, cumulative
    return None


def histogram_summary(hist: Histogram, **match: str) -> dict[str, float | int | None]:
    """Count, p50 and p99 (ms) since start over the series of ``hist`` whose labels match."""
    bounds, count = buckets(hist, **match)
    p50, p99 = quantile_ms(0.5, bounds), quantile_ms(0.99, bounds)
    return {"count": int(count), "p50_ms": p50, "p99_ms": p99}


def counter_total(counter: Counter, **match: str) -> int:
    """The sum of a counter's series whose labels match."""
    total = 0.0
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and all(
                sample.labels.get(k) == v for k, v in match.items()
            ):
                total += sample.value
    return int(total)


def gauge_value(gauge: Gauge) -> float:
    """The value of an unlabelled gauge."""
    for family in gauge.collect():
        for sample in family.samples:
            return float(sample.value)
    return 0.0


def _cache_counts(obs: Observability) -> tuple[int, int, int]:
    metrics = obs.cache_collector.metrics
    if metrics is None:
        return 0, 0, 0
    return metrics.count("hit"), metrics.count("miss"), metrics.count("error")


def summary(obs: Observability) -> dict[str, Any]:
    """Totals since start: requests, statements, cache, search, storage and index."""
    hits, misses, errors = _cache_counts(obs)
    g = obs.gauges
    wal, size = g.get("afdb_wal_bytes"), g.get("afdb_database_bytes")
    vectors, lag = g.get("afdb_index_vectors"), g.get("afdb_index_journal_lag")
    return {
        "time": time.time(),
        "uptime_s": round(time.time() - obs.started, 1),
        "requests": {
            **histogram_summary(obs.http_latency),
            "errors_5xx": counter_total(obs.http_requests, status="5xx"),
            "in_flight": int(gauge_value(obs.http_in_flight)),
        },
        "statements": {
            **histogram_summary(obs.statement_latency),
            "errors": counter_total(obs.statement_errors),
        },
        "cache": {
            "hits": hits,
            "misses": misses,
            "errors": errors,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        },
        "search": histogram_summary(obs.search_latency),
        "embedding": histogram_summary(obs.embed_latency),
        "storage": {
            "database_bytes": None if size is None else int(size),
            "wal_bytes": None if wal is None else int(wal),
        },
        "index": {
            "vectors": None if vectors is None else int(vectors),
            "journal_lag": None if lag is None else int(lag),
        },
    }


@dataclass(frozen=True)
class _Snapshot:
    at: float
    requests: Buckets
    statements: Buckets
    searches: Buckets
    request_count: float
    hits: int
    lookups: int


class History:
    """The last :data:`POINTS` windows of request/statement/search p99, hit ratio, rate."""

    def __init__(self, obs: Observability, points: int = POINTS) -> None:
        self.obs = obs
        self._points: collections.deque[dict[str, Any]] = collections.deque(maxlen=points)
        self._last = self._snapshot()
        self._lock = threading.Lock()

    def _snapshot(self) -> _Snapshot:
        obs = self.obs
        requests, request_count = buckets(obs.http_latency)
        hits, misses, _ = _cache_counts(obs)
        return _Snapshot(
            time.time(),
            requests,
            buckets(obs.statement_latency)[0],
            buckets(obs.search_latency)[0],
            request_count,
            hits,
            hits + misses,
        )

    def sample(self) -> None:
        """Close the current window and start the next."""
        now = self._snapshot()
        with self._lock:
            self._points.append(_window(self._last, now))
            self._last = now

    def points(self) -> list[dict[str, Any]]:
        """The closed windows, oldest first, plus the window in progress (if over a second)."""
        now = self._snapshot()
        with self._lock:
            out = list(self._points)
            if now.at - self._last.at >= 1.0:
                out.append({**_window(self._last, now), "partial": True})
        return out


def _window(a: _Snapshot, b: _Snapshot) -> dict[str, Any]:
    seconds = max(b.at - a.at, 1e-9)
    lookups = b.lookups - a.lookups
    return {
        "t": round(b.at, 3),
        "request_rate": round((b.request_count - a.request_count) / seconds, 3),
        "request_p99_ms": quantile_ms(0.99, _minus(b.requests, a.requests)),
        "statement_p99_ms": quantile_ms(0.99, _minus(b.statements, a.statements)),
        "search_p99_ms": quantile_ms(0.99, _minus(b.searches, a.searches)),
        "hit_ratio": round((b.hits - a.hits) / lookups, 4) if lookups > 0 else None,
    }


def _minus(b: Buckets, a: Buckets) -> Buckets:
    before = dict(a)
    return [(le, count - before.get(le, 0.0)) for le, count in b]


@asynccontextmanager
async def sampling(obs: Observability, interval: float = INTERVAL) -> AsyncIterator[History]:
    """Keep ``obs.history`` sampled every ``interval`` seconds while the block runs."""
    history = History(obs)

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            history.sample()

    task = asyncio.create_task(loop(), name="afdb-stats-history")
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
