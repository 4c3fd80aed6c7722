"""Cache metrics: plain counters and latency histograms per kind and level, dependency-free.

Counters are keyed by (kind, level, event): level is ``l1`` (in-process), ``l2`` (Redis) or
``load`` (the loader, i.e. the database); events are ``hit``, ``miss``, ``error``, ``oversize``...
Histograms are keyed by (kind, level) with fixed buckets, so the service's /metrics can export
them as Prometheus histograms unchanged (:meth:`Metrics.samples`). Labels stay bounded: at most
:data:`MAX_KINDS` distinct kinds are tracked, the rest are reported as ``other``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the latency buckets; the last bucket is +Inf.
BUCKETS: tuple[float, ...] = (
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
MAX_KINDS = 64
LEVELS = ("l1", "l2", "load")


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


class Metrics:
    """Thread-safe counters and histograms for one cache (one per process, normally)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str, str], int] = {}
        self._hist: dict[tuple[str, str], _Histogram] = {}
        self._kinds: set[str] = set()

    def _kind(self, kind: str) -> str:
        if kind in self._kinds:
            return kind
        if len(self._kinds) >= MAX_KINDS:
            return "other"
        self._kinds.add(kind)
        return kind

    def inc(self, kind: str, level: str, event: str, n: int = 1) -> None:
        """Add ``n`` to the counter of (kind, level, event)."""
        with self._lock:
            key = (self._kind(kind), level, event)
            self._counters[key] = self._counters.get(key, 0) + n

    def observe(self, kind: str, level: str, seconds: float) -> None:
        """Record one latency sample of (kind, level)."""
        i = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            key = (self._kind(kind), level)
            hist = self._hist.get(key)
            if hist is None:
                hist = self._hist[key] = _Histogram()
            hist.counts[i] += 1
            hist.total += seconds
            hist.n += 1

    def hit(self, kind: str, level: str, seconds: float) -> None:
        """A hit served by ``level``: one counter and one latency sample under one lock."""
        i = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            k = self._kind(kind)
            key = (k, level, "hit")
            self._counters[key] = self._counters.get(key, 0) + 1
            hist = self._hist.get((k, level))
            if hist is None:
                hist = self._hist[(k, level)] = _Histogram()
            hist.counts[i] += 1
            hist.total += seconds
            hist.n += 1

    def count(self, event: str, *, kind: str | None = None, level: str | None = None) -> int:
        """The sum of the counters of ``event``, optionally for one kind and level."""
        with self._lock:
            return sum(
                v
                for (k, lv, ev), v in self._counters.items()
                if ev == event and kind in (None, k) and level in (None, lv)
            )

    def hit_ratio(self, kind: str | None = None) -> float:
        """Hits / (hits + misses) over all levels (0.0 before any request)."""
        hits, misses = self.count("hit", kind=kind), self.count("miss", kind=kind)
        return hits / (hits + misses) if hits + misses else 0.0

    def percentile(self, kind: str, level: str, q: float) -> float:
        """An upper bound of the q-quantile (0..1) of (kind, level) from the buckets."""
        with self._lock:
            hist = self._hist.get((kind, level))
            counts = list(hist.counts) if hist else []
        total = sum(counts)
        if not total:
            return 0.0
        seen = 0
        for i, c in enumerate(counts):
            seen += c
            if seen >= q * total:
                return BUCKETS[i] if i < len(BUCKETS) else float("inf")
        return float("inf")

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain data (for `afdb cache stats` and tests)."""
        with self._lock:
            counters = [
                {"kind": k, "level": lv, "event": ev, "value": v}
                for (k, lv, ev), v in sorted(self._counters.items())
            ]
            latency = [
                {"kind": k, "level": lv, "count": h.n, "sum": h.total, "buckets": list(h.counts)}
                for (k, lv), h in sorted(self._hist.items())
            ]
        return {"counters": counters, "latency": latency, "bucket_bounds": list(BUCKETS)}

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """(name, labels, value) in Prometheus conventions: counters and cumulative histograms."""
        snap = self.snapshot()
        for c in snap["counters"]:
            labels = {"kind": c["kind"], "level": c["level"], "event": c["event"]}
            yield "afdb_cache_events_total", labels, float(c["value"])
        for h in snap["latency"]:
            base = {"kind": h["kind"], "level": h["level"]}
            running = 0
            for bound, n in zip([*BUCKETS, float("inf")], h["buckets"], strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                yield "afdb_cache_latency_seconds_bucket", {**base, "le": le}, float(running)
            yield "afdb_cache_latency_seconds_sum", base, h["sum"]
            yield "afdb_cache_latency_seconds_count", base, float(h["count"])
