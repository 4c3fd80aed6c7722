"""Shared helpers for the benchmarks: timing, result files, the sqld binary."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # servers.py: start a real sqld / redis-server


def time_per_op(fn: Callable[[int], object], n: int, rounds: int = 5) -> dict[str, float]:
    """Run ``fn(i)`` n times per round; p50/p99 of single ops and the best round's mean, in µs."""
    samples: list[float] = []
    means: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        start_round = clock()
        for i in range(n):
            t0 = clock()
            fn(i)
            samples.append((clock() - t0) / 1000)
        means.append((clock() - start_round) / 1000 / n)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
        "mean_us": min(means),
    }


def write_results(name: str, rows: list[dict[str, Any]], table: str) -> None:
    """Write ``bench/results/<name>.json`` and ``<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    footer = f"\n_Python {meta['python']} on {meta['machine']}, measured {meta['when']}._\n"
    (RESULTS / f"{name}.md").write_text(table + "\n" + footer)
    print(table)


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)
