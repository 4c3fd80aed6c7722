"""Data, ground truth, filters and timing for ``bench/vector.py``.

* :func:`ensure_cache` builds ``bench/.cache`` (corpus + MiniLM embeddings) by running
  ``bench/corpus.py`` and ``bench/embed_corpus.py`` when it is missing (~30 minutes, once).
* :class:`Data` holds the first ``n`` corpus vectors, the queries and the filter columns.
* :class:`Case` is one filter set (a selectivity): per query the filter value, its mask over the
  corpus rows and the ``Filter`` our backends get. Query j filters on value ``j mod cardinality``
  so each selectivity is averaged over values.
* :class:`Truth` is exact filtered top-10 by numpy; :meth:`Truth.recall` counts a returned row
  as a hit if the filter allows it and its exact score reaches the 10th best allowed score (ties
  at the boundary count, nothing outside the filter does).
* :func:`timed_queries` runs one query at a time and stops after ``cap_s`` seconds once
  ``min_q`` queries ran (slow cells use fewer queries; the row records how many).
"""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
K = 10
DIM = 384
YEAR_START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())  # as bench/corpus.py
YEAR_SECONDS = 366 * 86_400
STATUS = {"active": 0, "draft": 1, "archived": 2}


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def ensure_cache(partial: bool = False) -> None:
    """Build the corpus and its embeddings with the scripts that own them, if missing
    (``partial``: chunks already embedded will do, see :func:`embedded_prefix`)."""
    if not (CACHE / "corpus.jsonl").exists() or not (CACHE / "queries.jsonl").exists():
        log("corpus missing: running bench/corpus.py (a few minutes)")
        subprocess.run([sys.executable, str(ROOT / "bench" / "corpus.py")], check=True)
    if partial and embedded_prefix() is not None:
        return
    if not (CACHE / "corpus_emb.npy").exists() or not (CACHE / "queries_emb.npy").exists():
        log("embeddings missing: running bench/embed_corpus.py (~25 minutes on 2 cores)")
        subprocess.run([sys.executable, str(ROOT / "bench" / "embed_corpus.py")], check=True)


@dataclass
class Data:
    """Corpus rows 0..n-1 (vectors, texts, metadata) and the held-out queries."""

    x: np.ndarray  # n x 384 float32, unit rows
    q: np.ndarray  # nq x 384
    texts: list[str]
    sources: list[str]
    meta: list[dict[str, Any]]
    query_texts: list[str]
    cols: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def nq(self) -> int:
        return len(self.q)


def embedded_prefix() -> tuple[np.ndarray, np.ndarray] | None:
    """(corpus vectors 0..m-1, query vectors) from the chunks ``bench/embed_corpus.py`` has
    finished so far (it embeds the query chunks first, then the corpus in order); None if the
    queries are not embedded yet."""
    emb = CACHE / "emb"
    try:
        meta = json.loads((emb / "meta.json").read_text())
    except OSError:
        return None
    chunk, n_corpus, n_queries = meta["chunk"], meta["n_corpus"], meta["n_queries"]
    n_chunks = math.ceil((n_corpus + n_queries) / chunk)
    first_query = n_corpus // chunk
    paths = [emb / f"chunk_{i:04d}.npy" for i in range(n_chunks)]
    if not all(p.exists() for p in paths[first_query:]):
        return None
    tail = np.concatenate([np.load(p) for p in paths[first_query:]])
    q = tail[n_corpus - first_query * chunk:]
    done = 0
    while done < first_query and paths[done].exists():
        done += 1
    parts = [np.load(p) for p in paths[:done]]
    if done == first_query:  # the corpus rows in the first query chunk follow on
        parts.append(tail[: n_corpus - first_query * chunk])
    x = np.concatenate(parts) if parts else np.empty((0, DIM), np.float32)
    return x, q


def load(n: int, nq: int, partial: bool = False) -> Data:
    full = (CACHE / "corpus_emb.npy").exists() and (CACHE / "queries_emb.npy").exists()
    if full:
        x = np.load(CACHE / "corpus_emb.npy", mmap_mode="r")
        q = np.load(CACHE / "queries_emb.npy")
    else:
        if not partial or (prefix := embedded_prefix()) is None:
            raise SystemExit("embeddings missing: run bench/embed_corpus.py (or --partial)")
        x, q = prefix
        if n > len(x):
            log(f"--partial: only the first {len(x)} corpus passages are embedded: n = {len(x)}")
            n = len(x)
    if n > len(x):
        raise SystemExit(f"--n {n}: the corpus holds {len(x)} passages")
    x = np.ascontiguousarray(x[:n], dtype=np.float32)
    q = np.ascontiguousarray(q[:nq], dtype=np.float32)
    texts, sources, meta = [], [], []
    with (CACHE / "corpus.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            row = json.loads(line)
            texts.append(row["text"])
            sources.append(row["source"])
            meta.append(row["metadata"])
    with (CACHE / "queries.jsonl").open(encoding="utf-8") as f:
        query_texts = [json.loads(line)["text"] for line in f][:nq]
    data = Data(x, q, texts, sources, meta, query_texts)
    data.cols = {
        "status": np.array([STATUS[m["status"]] for m in meta], dtype=np.int8),
        "topic": np.array([int(m["topic"].split("-")[1]) for m in meta], dtype=np.int16),
        "lang": np.array([int(m["lang"].split("-")[1]) for m in meta], dtype=np.int16),
        "owner": np.array([int(m["owner"].split("-")[1]) for m in meta], dtype=np.int16),
        "created": np.array([m["created"] for m in meta], dtype=np.int64),
    }
    return data


def synthetic(n: int, nq: int, seed: int = 20240501) -> Data:
    """A stand-in corpus when the real embeddings are not there (``bench/vector.py
    --synthetic``): unit 384-d vectors from 60 clusters in a 64-d latent space (the tests'
    generator, shaped like sentence embeddings) and the same metadata distribution as
    ``bench/corpus.py`` (status 50/25/25%, 10 topics, 100 langs, 1,000 owners, created over
    2024). HNSW recall and speed differ from real text vectors; sizes and filters do not."""
    base = np.random.default_rng(0)
    centers = base.standard_normal((60, 64))
    proj = base.standard_normal((64, DIM)) / 8.0

    def vectors(count: int, rng: np.random.Generator) -> np.ndarray:
        z = centers[rng.integers(0, 60, count)] + rng.standard_normal((count, 64))
        v = z @ proj + 0.3 * rng.standard_normal((count, DIM))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    rng = np.random.default_rng(seed)
    x, q = vectors(n, rng), vectors(nq, rng)
    statuses = rng.choice(["active", "draft", "archived"], n, p=[0.5, 0.25, 0.25])
    topic, lang, owner = rng.integers(0, 10, n), rng.integers(0, 100, n), rng.integers(0, 1000, n)
    created = YEAR_START + rng.integers(0, YEAR_SECONDS, n)
    meta = [
        {"status": str(statuses[i]), "topic": f"topic-{topic[i]}", "lang": f"lang-{lang[i]:02d}",
         "owner": f"owner-{owner[i]:04d}", "created": int(created[i]),
         "created_iso": datetime.fromtimestamp(int(created[i]), UTC).strftime(
             "%Y-%m-%dT%H:%M:%SZ")}
        for i in range(n)
    ]
    texts = [f"synthetic passage {i}: cluster vectors, no text" for i in range(n)]
    data = Data(x, q, texts, [f"synthetic:{i}" for i in range(n)], meta,
                [f"synthetic query {j}" for j in range(nq)])
    data.cols = {
        "status": np.array([STATUS[m["status"]] for m in meta], dtype=np.int8),
        "topic": topic.astype(np.int16),
        "lang": lang.astype(np.int16),
        "owner": owner.astype(np.int16),
        "created": created.astype(np.int64),
    }
    return data


def iso(seconds: int) -> str:
    """The stored ``created_at`` text of a time (the form prompts rows hold)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Case:
    """One filter set: what query j may return, for numpy and for our ``Filter``."""

    name: str  # e.g. "metadata.topic"
    selectivity: float  # nominal: 1.0, 0.5, 0.1, 0.01, 0.001
    card: int  # distinct filter values (query j uses value j % card)
    kind: str  # "none", "mirror" (status/owner/created: numpy masks in memory) or "metadata"
    mask_of: Callable[[int], np.ndarray]
    filter_of: Callable[[int], Any]
    _masks: dict[int, np.ndarray] = field(default_factory=dict)

    def value(self, j: int) -> int:
        return j % self.card

    def mask(self, j: int) -> np.ndarray:
        v = self.value(j)
        if v not in self._masks:
            self._masks[v] = self.mask_of(v)
        return self._masks[v]

    def actual(self, nq: int) -> float:
        """Mean fraction of rows the filters of queries 0..nq-1 allow."""
        return float(np.mean([self.mask(j).mean() for j in range(min(nq, self.card * 4))]))


def cases(data: Data, owner_ids: list[str]) -> list[Case]:
    """The filter sets. ``owner_ids[i]`` is the user id of corpus owner ``owner-i``."""
    from autoforge_data.vector.base import Filter

    c = data.cols
    n = data.n

    def window(parts: int) -> tuple[Callable[[int], np.ndarray], Callable[[int], Any]]:
        span = YEAR_SECONDS // parts  # 366 days / 10 and / 100 are whole seconds

        def bounds(v: int) -> tuple[int, int]:
            return YEAR_START + v * span, YEAR_START + (v + 1) * span

        def mask(v: int) -> np.ndarray:
            lo, hi = bounds(v)
            return (c["created"] >= lo) & (c["created"] < hi)

        def flt(v: int) -> Any:
            lo, hi = bounds(v)
            return Filter(created_from=iso(lo), created_to=iso(hi))

        return mask, flt

    w10, w100 = window(10), window(100)
    return [
        Case("none", 1.0, 1, "none", lambda v: np.ones(n, dtype=bool), lambda v: Filter()),
        Case("status=active", 0.5, 1, "mirror", lambda v: c["status"] == 0,
             lambda v: Filter(status=("active",))),
        Case("metadata.topic", 0.1, 10, "metadata", lambda v: c["topic"] == v,
             lambda v: Filter(metadata={"topic": f"topic-{v}"})),
        Case("created 10% window", 0.1, 10, "mirror", w10[0], w10[1]),
        Case("metadata.lang", 0.01, 100, "metadata", lambda v: c["lang"] == v,
             lambda v: Filter(metadata={"lang": f"lang-{v:02d}"})),
        Case("created 1% window", 0.01, 100, "mirror", w100[0], w100[1]),
        Case("owner_id", 0.001, 1000, "mirror", lambda v: c["owner"] == v,
             lambda v: Filter(owner_id=owner_ids[v])),
    ]


class Truth:
    """Exact filtered top-k thresholds per (case, query), by numpy over the same vectors."""

    def __init__(self, data: Data, all_cases: list[Case]) -> None:
        self.x = data.x
        self.q = data.q
        self.kth: dict[str, np.ndarray] = {}
        self.want: dict[str, np.ndarray] = {}
        for case in all_cases:
            self.kth[case.name] = np.full(data.nq, -np.inf, dtype=np.float32)
            self.want[case.name] = np.zeros(data.nq, dtype=np.int32)
        for s in range(0, data.nq, 128):
            sims = data.q[s : s + 128] @ data.x.T
            for case in all_cases:
                for j in range(s, min(s + 128, data.nq)):
                    allowed = sims[j - s][case.mask(j)]
                    kk = min(K, len(allowed))
                    self.want[case.name][j] = kk
                    if kk:
                        self.kth[case.name][j] = np.partition(allowed, len(allowed) - kk)[
                            len(allowed) - kk
                        ]

    def recall(self, case: Case, j: int, rows: np.ndarray) -> float:
        """Recall@10 of corpus rows returned for query j (-1 = no row)."""
        want = int(self.want[case.name][j])
        if want == 0:
            return 1.0
        rows = np.asarray(rows, dtype=np.int64)[:K]
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return 0.0
        rows = np.unique(rows)
        ok = case.mask(j)[rows]
        scores = self.x[rows] @ self.q[j]
        hits = int(np.count_nonzero(ok & (scores >= self.kth[case.name][j] - 1e-6)))
        return min(hits, want) / want


def timed_queries(
    fn: Callable[[int], np.ndarray],
    nq: int,
    *,
    cap_s: float,
    min_q: int,
    warmup: int = 5,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Run fn(j) for j = 0, 1, ... one at a time; stop at nq, or after cap_s once min_q ran."""
    for j in range(min(warmup, nq)):
        fn(j)
    out: list[np.ndarray] = []
    lat: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    limit = cap_s * 1e9
    for j in range(nq):
        t0 = clock()
        out.append(fn(j))
        t1 = clock()
        lat.append(t1 - t0)
        if j + 1 >= min_q and t1 - start > limit:
            break
    total = (clock() - start) / 1e9
    arr = np.array(lat, dtype=np.float64) / 1e6
    return out, {
        "queries": len(lat),
        "qps": round(len(lat) / total, 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 4),
        "p95_ms": round(float(np.percentile(arr, 95)), 4),
    }


def mean_recall(truth: Truth, case: Case, found: list[np.ndarray]) -> float:
    return round(float(np.mean([truth.recall(case, j, f) for j, f in enumerate(found)])), 4)


def rss_mb() -> float:
    import psutil

    gc.collect()
    return float(psutil.Process().memory_info().rss / 2**20)


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def fetch_for(k: int, selectivity: float, n: int, margin: float = 2.0) -> int:
    """Over-fetch size for post-filtering: k / selectivity x margin, capped at n."""
    return min(n, max(k, math.ceil(k / max(selectivity, 1e-9) * margin)))
