"""Probe in-process ANN engines on the cached MiniLM corpus: which one backs the ``memory`` index.

On the same vectors (``bench/.cache/corpus_emb.npy`` / ``queries_emb.npy``, or with ``--partial``
whatever chunks ``embed_corpus.py`` has written so far) it measures

* hnswlib (M=16, efConstruction 200 and 100), faiss-cpu ``IndexHNSWFlat`` (M 16/32,
  efConstruction 40/100), usearch (connectivity 16, expansion_add 128; f32, f16 and i8 storage,
  i8/f16 also with an exact float32 re-rank of an over-fetched candidate list);
* build time (2 threads), persisted size, save and load time (warm start), the resident memory a
  loaded index adds (RSS delta), recall@10 against exact numpy inner product, QPS and p50/p95
  query by query on one thread (k=10), and batched QPS on 1 and 2 threads, over an ef sweep;
* filtered search at selectivities 50/10/1/0.1% (status / topic / lang / owner; query i filters
  on value ``i % cardinality``) with each engine's own filtering -- hnswlib's ``filter``
  callback, faiss ``SearchParametersHNSW(sel=IDSelectorBitmap)``, and for usearch (its Python API
  has no predicate) over-fetch + post-filter -- against an exact scan of the filtered subset.

Writes ``bench/.cache/engines_probe.json`` (``--out``) and prints a table.

    .venv/bin/python bench/engines_probe.py                      # the full 50k run, ~10 min
    .venv/bin/python bench/engines_probe.py --partial --n 20000 --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
K = 10
DIM = 384
SELECTIVITIES = {0.5: ("status", 2), 0.1: ("topic", 10), 0.01: ("lang", 100),
                 0.001: ("owner", 1000)}
PROC = psutil.Process()


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    x: np.ndarray            # base vectors, n x dim float32, L2-normalised
    q: np.ndarray            # query vectors
    cols: dict[str, np.ndarray]   # filter columns as small ints
    source: str
    masks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def mask(self, col: str, value: int) -> np.ndarray:
        key = (col, value)
        if key not in self.masks:
            self.masks[key] = self.cols[col] == value
        return self.masks[key]

    def filters(self, sel: float) -> list[tuple[str, int]]:
        col, card = SELECTIVITIES[sel]
        if col == "status":
            return [("status", 0)] * len(self.q)  # 0 = active, half of the rows
        return [(col, i % card) for i in range(len(self.q))]


def _columns(n: int) -> dict[str, np.ndarray]:
    status = {"active": 0, "draft": 1, "archived": 2}
    cols: dict[str, list[int]] = {"status": [], "topic": [], "lang": [], "owner": []}
    with (CACHE / "corpus.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            m = json.loads(line)["metadata"]
            cols["status"].append(status[m["status"]])
            cols["topic"].append(int(m["topic"].split("-")[1]))
            cols["lang"].append(int(m["lang"].split("-")[1]))
            cols["owner"].append(int(m["owner"].split("-")[1]))
    return {k: np.asarray(v, dtype=np.int32) for k, v in cols.items()}


def load(n: int, n_queries: int, partial: bool) -> Data:
    full = CACHE / "corpus_emb.npy"
    if full.exists() and not partial:
        x = np.load(full)[:n]
        q = np.load(CACHE / "queries_emb.npy")[:n_queries]
        source = "corpus_emb.npy + queries_emb.npy"
    else:
        chunks = []
        i = 0
        while (CACHE / "emb" / f"chunk_{i:04d}.npy").exists():
            chunks.append(np.load(CACHE / "emb" / f"chunk_{i:04d}.npy"))
            i += 1
        if not chunks:
            raise SystemExit("no embeddings yet: run bench/embed_corpus.py")
        meta = json.loads((CACHE / "emb" / "meta.json").read_text())
        allv = np.concatenate(chunks)[: meta["n_corpus"]]  # corpus rows only
        take = min(n, len(allv) - n_queries)
        x, q = allv[:take], allv[take:take + n_queries]  # queries: the next, unindexed rows
        source = f"partial: {i} chunks; queries = corpus rows {take}..{take + len(q)}"
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(q, dtype=np.float32)
    return Data(x=x, q=q, cols=_columns(len(x)), source=source)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int = K,
               mask: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Exact top-k by inner product (ties broken by id); mask(i) restricts query i's rows."""
    out = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(q), 256):
        sims = q[s:s + 256] @ x.T
        for j in range(len(sims)):
            row = sims[j]
            if mask is not None:
                row = np.where(mask(s + j), row, -np.inf)
            top = np.argpartition(-row, k)[:k]
            top = top[np.lexsort((top, -row[top]))]
            top = top[np.isfinite(row[top])]
            out[s + j, : len(top)] = top
    return out


def recall(found: list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        tset = {int(v) for v in t if v >= 0}
        if not tset:
            continue
        hits += len(tset & {int(v) for v in np.asarray(f)[:K] if v >= 0})
        total += len(tset)
    return hits / total if total else 1.0


def timed_single(fn: Callable[[int], Any], nq: int) -> tuple[list[Any], dict[str, float]]:
    out: list[Any] = []
    lat = np.empty(nq)
    clock = time.perf_counter_ns
    t_all = clock()
    for i in range(nq):
        t0 = clock()
        out.append(fn(i))
        lat[i] = clock() - t0
    total = (clock() - t_all) / 1e9
    p50, p95 = (round(float(np.percentile(lat, p)) / 1e6, 4) for p in (50, 95))
    return out, {"qps": round(nq / total, 1), "p50_ms": p50, "p95_ms": p95}


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    best = math.inf
    res = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return res, best


def rss_mb() -> float:
    gc.collect()
    return PROC.memory_info().rss / 2**20


@contextmanager
def threads(n: int) -> Iterator[None]:
    import faiss

    faiss.omp_set_num_threads(n)
    with threadpool_limits(limits=n):
        yield


# --------------------------------------------------------------------------- engines


class Engine:
    """One engine x build setting: build, persist, load, search, filtered search."""

    name = ""
    efs: list[int] = []  # noqa: RUF012

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.index: Any = None

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def build(self, x: np.ndarray) -> None: ...
    def save(self, path: Path) -> None: ...
    def load(self, path: Path, n: int) -> None: ...
    def set_ef(self, ef: int) -> None: ...
    def search_one(self, q: np.ndarray, k: int) -> np.ndarray: ...
    def search_batch(self, q: np.ndarray, k: int, nthreads: int) -> np.ndarray: ...
    def search_filtered(self, q: np.ndarray, k: int, key: tuple[str, int], sel: float,
                        data: Data) -> np.ndarray: ...
    def memory_bytes(self) -> int | None:
        return None


class Hnswlib(Engine):
    name = "hnswlib"
    efs = [16, 32, 48, 64, 96, 128, 192, 256]  # noqa: RUF012

    def build(self, x: np.ndarray) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(max_elements=len(x), M=self.params["M"],
                              ef_construction=self.params["efC"], random_seed=100)
        self.index.add_items(x, np.arange(len(x)), num_threads=2)
        self.index.set_num_threads(1)

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def load(self, path: Path, n: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.load_index(str(path), max_elements=n)
        self.index.set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(q, k=k, num_threads=1)[0][0]

    def search_batch(self, q: np.ndarray, k: int, nthreads: int) -> np.ndarray:
        return self.index.knn_query(q, k=k, num_threads=nthreads)[0]

    def prepare_filter(self, data: Data, key: tuple[str, int]) -> Any:
        return data.mask(*key).tolist().__getitem__  # a C-level callable: label -> bool

    def search_filtered(self, q: np.ndarray, k: int, key: tuple[str, int], sel: float,
                        data: Data) -> np.ndarray:
        pred = self._preds[key]
        # knn_query raises when it finds fewer than k allowed items: ask again for fewer
        kk = min(k, int(data.mask(*key).sum()))
        while kk > 0:
            try:
                return self.index.knn_query(q, k=kk, num_threads=1, filter=pred)[0][0]
            except RuntimeError:
                kk //= 2
        return np.full(k, -1)


class Faiss(Engine):
    name = "faiss"
    efs = [16, 32, 48, 64, 96, 128, 192, 256]  # noqa: RUF012

    def build(self, x: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(2)
        self.index = faiss.IndexHNSWFlat(x.shape[1], self.params["M"], faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.params["efC"]
        self.index.add(x)
        faiss.omp_set_num_threads(1)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    def load(self, path: Path, n: int) -> None:
        import faiss

        self.index = faiss.read_index(str(path))

    def set_ef(self, ef: int) -> None:
        import faiss

        self.ef = ef
        self.sp = faiss.SearchParametersHNSW(efSearch=ef)

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q[None, :], k, params=self.sp)[1][0]

    def search_batch(self, q: np.ndarray, k: int, nthreads: int) -> np.ndarray:
        import faiss

        faiss.omp_set_num_threads(nthreads)
        try:
            return self.index.search(q, k, params=self.sp)[1]
        finally:
            faiss.omp_set_num_threads(1)

    def prepare_filter(self, data: Data, key: tuple[str, int]) -> Any:
        import faiss

        bits = np.packbits(data.mask(*key), bitorder="little")
        sel = faiss.IDSelectorBitmap(len(data.x), faiss.swig_ptr(bits))
        return (bits, sel)  # keep the bitmap alive with the selector

    def search_filtered(self, q: np.ndarray, k: int, key: tuple[str, int], sel: float,
                        data: Data) -> np.ndarray:
        import faiss

        params = faiss.SearchParametersHNSW(sel=self._preds[key][1], efSearch=self.ef)
        return self.index.search(q[None, :], k, params=params)[1][0]


class Usearch(Engine):
    """usearch; ``rerank`` > 0 fetches that many candidates and re-ranks them in exact float32."""

    name = "usearch"
    efs = [16, 24, 32, 48, 64, 96, 128, 192, 256]  # noqa: RUF012

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.x32: np.ndarray | None = None

    def _new(self) -> Any:
        from usearch.index import Index

        return Index(ndim=DIM, metric=self.params["metric"], dtype=self.params["dtype"],
                     connectivity=self.params["conn"], expansion_add=self.params["expA"])

    def build(self, x: np.ndarray) -> None:
        self.index = self._new()
        self.index.add(np.arange(len(x), dtype=np.uint64), x, threads=2)
        if self.params.get("rerank"):
            self.x32 = x.astype(np.float16) if self.params.get("rr") == "f16" else x

    def save(self, path: Path) -> None:
        self.index.save(str(path))

    def load(self, path: Path, n: int) -> None:
        self.index = self._new()
        if self.params.get("view"):
            self.index.view(str(path))
        else:
            self.index.load(str(path))

    def memory_bytes(self) -> int | None:
        return int(self.index.memory_usage)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def _fetch(self) -> int:
        return int(self.params.get("rerank") or K)

    def _rerank(self, q: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
        assert self.x32 is not None
        keys = keys[keys != np.iinfo(np.uint64).max].astype(np.int64)
        sims = self.x32[keys].astype(np.float32, copy=False) @ q
        return keys[np.argsort(-sims, kind="stable")[:k]]

    def search_one(self, q: np.ndarray, k: int) -> np.ndarray:
        if self.params.get("api") == "public":
            return self.index.search(q, self._fetch(), threads=1).keys
        # the compiled call: the public Index.search wraps it in Matches objects (~15 us more)
        keys = self.index._compiled.search_many(q[None, :], self._fetch(), False, 1)[0][0]
        return self._rerank(q, keys, k) if self.params.get("rerank") else keys

    def search_batch(self, q: np.ndarray, k: int, nthreads: int) -> np.ndarray:
        keys = self.index._compiled.search_many(q, self._fetch(), False, nthreads)[0]
        if self.params.get("rerank"):
            return np.stack([self._rerank(qi, ki, k) for qi, ki in zip(q, keys, strict=True)])
        return keys

    def prepare_filter(self, data: Data, key: tuple[str, int]) -> Any:
        return data.mask(*key)

    def search_filtered(self, q: np.ndarray, k: int, key: tuple[str, int], sel: float,
                        data: Data) -> np.ndarray:
        """No predicate in usearch's Python API: over-fetch k/selectivity x 2, post-filter."""
        mask = self._preds[key]
        fetch = min(len(data.x), max(self._fetch(), math.ceil(k / sel * 2)))
        old = self.index.expansion_search
        self.index.expansion_search = max(old, fetch)
        keys = self.index._compiled.search_many(q[None, :], fetch, False, 1)[0][0]
        self.index.expansion_search = old
        keys = keys[keys != np.iinfo(np.uint64).max].astype(np.int64)
        keys = keys[mask[keys]]
        if self.params.get("rerank"):
            return self._rerank(q, keys.astype(np.uint64), k)
        return keys[:k]


# --------------------------------------------------------------------------- runs


def probe_engine(eng: Engine, data: Data, truth: np.ndarray, ftruth: dict[float, np.ndarray],
                 tmp: Path, *, quick: bool) -> list[dict[str, Any]]:
    n = len(data.x)
    raw_mb = data.x.nbytes / 2**20
    log(f"{eng.name} {eng.label()}: building on {n} vectors")
    rss0 = rss_mb()
    _, build_s = timed(lambda: eng.build(data.x))
    rss_build = rss_mb() - rss0
    path = tmp / f"{eng.name}.idx"
    _, save_s = timed(lambda: eng.save(path))
    size_mb = path.stat().st_size / 2**20
    x32 = getattr(eng, "x32", None)
    eng.index = None
    rss1 = rss_mb()
    _, load_s = timed(lambda: eng.load(path, n))
    rss_load = rss_mb() - rss1
    if x32 is not None:
        eng.x32 = x32  # type: ignore[attr-defined]
    mem_self = eng.memory_bytes()
    extra_mb = x32.nbytes / 2**20 if x32 is not None else 0.0
    base = {"engine": eng.name, "params": eng.label(), "n": n, "dim": DIM,
            "build_s": round(build_s, 2), "build_threads": 2, "save_s": round(save_s, 3),
            "load_s": round(load_s, 3), "file_mb": round(size_mb, 1),
            "rss_build_mb": round(rss_build, 1), "rss_load_mb": round(rss_load, 1),
            "engine_reported_mb": round(mem_self / 2**20, 1) if mem_self else None,
            "rerank_f32_mb": round(extra_mb, 1),
            "mem_vs_raw": round((max(rss_load, size_mb) + extra_mb) / raw_mb, 2)}
    log(f"  build {build_s:.1f} s, file {size_mb:.1f} MB, load {load_s * 1000:.0f} ms, "
        f"RSS +{rss_load:.1f} MB")
    rows = []
    efs = eng.efs if not quick else eng.efs[1::2]
    with threads(1):
        for ef in efs:
            eng.set_ef(ef)
            found, t = timed_single(lambda i: eng.search_one(data.q[i], K), len(data.q))
            r = recall(found, truth)
            _, tb1 = timed(lambda: eng.search_batch(data.q, K, 1))
            row = {**base, "ef": ef, "selectivity": 1.0, "recall10": round(r, 4), **t,
                   "qps_batch_t1": round(len(data.q) / tb1, 1)}
            if not quick:
                with threads(2):
                    _, tb2 = timed(lambda: eng.search_batch(data.q, K, 2))
                row["qps_batch_t2"] = round(len(data.q) / tb2, 1)
            rows.append(row)
            log(f"  ef={ef}: recall {r:.4f}, {t['qps']} QPS single, p50 {t['p50_ms']} ms, "
                f"batch {row['qps_batch_t1']} QPS")
        # filtered, at the engine's filtered ef sweep
        fefs = [64, 128, 256] if not quick else [128]
        if eng.name == "usearch":  # over-fetch sets its own expansion: one run is enough
            fefs = [] if eng.params.get("api") == "public" else [64]
        for sel in SELECTIVITIES:
            keys = data.filters(sel)
            eng._preds = {key: eng.prepare_filter(data, key) for key in set(keys)}  # type: ignore[attr-defined]
            for ef in fefs:
                eng.set_ef(ef)
                found, t = timed_single(
                    lambda i, keys=keys, sel=sel: eng.search_filtered(data.q[i], K, keys[i], sel,
                                                                      data), len(data.q))
                r = recall(found, ftruth[sel])
                rows.append({**base, "ef": ef, "selectivity": sel, "recall10": round(r, 4),
                             "strategy": "native filter" if eng.name != "usearch"
                             else "over-fetch k/sel*2 + post-filter", **t})
                log(f"  filtered sel={sel}: ef={ef} recall {r:.4f}, {t['qps']} QPS")
    eng.index = None
    path.unlink()
    return rows


def probe_exact(data: Data, truth: np.ndarray, ftruth: dict[float, np.ndarray]) -> list[dict]:
    x = data.x
    rows = []
    base = {"engine": "numpy", "params": "exact inner product", "n": len(x), "dim": DIM,
            "build_s": 0.0, "file_mb": round(x.nbytes / 2**20, 1), "mem_vs_raw": 1.0}

    def top(sims: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        kk = min(K, len(sims))
        if kk == 0:
            return np.empty(0, dtype=np.int64)
        t = np.argpartition(-sims, kk - 1)[:kk]
        t = t[np.argsort(-sims[t], kind="stable")]
        return t if ids is None else ids[t]

    with threads(1):
        found, t = timed_single(lambda i: top(x @ data.q[i]), len(data.q))
        rows.append({**base, "selectivity": 1.0, "recall10": round(recall(found, truth), 4),
                     "strategy": "full scan", **t})
        log(f"numpy exact: {t['qps']} QPS single")
        for sel in SELECTIVITIES:
            keys = data.filters(sel)
            ids = {key: np.flatnonzero(data.mask(*key)) for key in set(keys)}
            masks = {key: data.mask(*key) for key in set(keys)}
            found, t = timed_single(
                lambda i, keys=keys, ids=ids: top(x[ids[keys[i]]] @ data.q[i], ids[keys[i]]),
                len(data.q))
            rows.append({**base, "selectivity": sel,
                         "recall10": round(recall(found, ftruth[sel]), 4),
                         "strategy": "gather subset + scan", **t})
            found2, t2 = timed_single(
                lambda i, keys=keys, masks=masks: top(np.where(masks[keys[i]], x @ data.q[i],
                                                               -np.inf)),
                len(data.q))
            rows.append({**base, "selectivity": sel,
                         "recall10": round(recall(found2, ftruth[sel]), 4),
                         "strategy": "full scan + mask", **t2})
            log(f"numpy exact filtered sel={sel}: subset {t['qps']} QPS, masked {t2['qps']} QPS")
    return rows


def summarize(rows: list[dict[str, Any]], target: float = 0.95) -> tuple[list[dict], str]:
    """Per engine setting: the fastest unfiltered point at recall >= target, plus its costs."""
    out = []
    configs = dict.fromkeys((r["engine"], r["params"]) for r in rows)
    for eng, params in configs:
        mine = [r for r in rows if (r["engine"], r["params"]) == (eng, params)]
        unf = [r for r in mine if r["selectivity"] == 1.0 and r["recall10"] >= target]
        best = max(unf, key=lambda r: r["qps"]) if unf else None
        filt = {}
        for sel in SELECTIVITIES:
            ok = [r for r in mine if r["selectivity"] == sel]
            good = [r for r in ok if r["recall10"] >= target]
            pick = max(good, key=lambda r: r["qps"]) if good else (
                max(ok, key=lambda r: r["recall10"]) if ok else None)
            if pick:
                filt[str(sel)] = {"recall10": pick["recall10"], "qps": pick["qps"],
                                  "ef": pick.get("ef"), "strategy": pick.get("strategy")}
        out.append({"engine": eng, "params": params, "best_at_target": best and {
            k: best.get(k) for k in ("ef", "recall10", "qps", "p50_ms", "p95_ms", "qps_batch_t1",
                                     "qps_batch_t2")},
            **{k: mine[0].get(k) for k in ("build_s", "file_mb", "rss_load_mb", "load_s",
                                           "rerank_f32_mb", "mem_vs_raw")},
            "filtered": filt})
    lines = ["| engine | params | build s | file MB | RSS MB | load s | ef | recall@10 | QPS | "
             "p50 ms | batch QPS | filtered recall/QPS 50% / 10% / 1% / 0.1% |",
             "|" + "---|" * 12]
    for o in out:
        b = o["best_at_target"] or {}
        f = " / ".join(f"{v['recall10']:.3f}@{v['qps']:.0f}" for v in o["filtered"].values())
        lines.append(f"| {o['engine']} | {o['params']} | {o['build_s']} | {o['file_mb']} | "
                     f"{o['rss_load_mb']} | {o['load_s']} | {b.get('ef', '-')} | "
                     f"{b.get('recall10', '-')} | {b.get('qps', '-')} | {b.get('p50_ms', '-')} | "
                     f"{b.get('qps_batch_t1', '-')} | {f} |")
    return out, "\n".join(lines)


H2H = [
    Hnswlib({"M": 16, "efC": 100}),
    Hnswlib({"M": 16, "efC": 200}),
    Faiss({"M": 16, "efC": 40}),
    Faiss({"M": 32, "efC": 40}),
    Faiss({"M": 32, "efC": 100}),
    Usearch({"dtype": "f16", "metric": "ip", "conn": 16, "expA": 128}),
    Usearch({"dtype": "bf16", "metric": "ip", "conn": 16, "expA": 128}),
    Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 128, "rerank": 20}),
    Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 128, "rerank": 20, "rr": "f16"}),
    Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 64, "rerank": 20}),
    Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 128, "rerank": 30}),
]


def head_to_head(data: Data, truth: np.ndarray, rounds: int,
                 targets: tuple[float, ...] = (0.95, 0.98, 0.99)) -> dict[str, Any]:
    """All settings built side by side; per recall target the smallest ef reaching it, then
    ``rounds`` interleaved timing rounds (engine order rotated), median QPS: less noise from
    whatever else the machine runs than one pass per engine."""
    built: list[tuple[Engine, dict[str, Any]]] = []
    for eng in H2H:
        rss0 = rss_mb()
        _, b = timed(lambda eng=eng: eng.build(data.x))
        extra = getattr(eng, "x32", None)
        info = {"build_s": round(b, 2), "rss_mb": round(rss_mb() - rss0, 1),
                "rerank_mb": round(extra.nbytes / 2**20, 1) if extra is not None else 0.0}
        shared = info["rerank_mb"] if extra is data.x else 0.0  # a view of the data: not in RSS
        info["mem_vs_raw"] = round((info["rss_mb"] + shared) / (data.x.nbytes / 2**20), 2)
        built.append((eng, info))
        log(f"h2h built {eng.name} {eng.label()}: {info}")
    points: list[tuple[Engine, float, int, float]] = []  # engine, target, ef, recall
    with threads(1):
        for eng, _ in built:
            for target in targets:
                for ef in range(8, 513, 8):
                    eng.set_ef(ef)
                    found = [eng.search_one(data.q[i], K) for i in range(len(data.q))]
                    r = recall(found, truth)
                    if r >= target:
                        points.append((eng, target, ef, r))
                        break
        qps: dict[int, list[float]] = {i: [] for i in range(len(points))}
        for rnd in range(rounds):
            order = list(range(len(points)))
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for j in order:
                eng, _, ef, _ = points[j]
                eng.set_ef(ef)
                _, t = timed_single(lambda i, eng=eng: eng.search_one(data.q[i], K), len(data.q))
                qps[j].append(t["qps"])
    out = []
    infos = {id(e): info for e, info in built}
    for j, (eng, target, ef, r) in enumerate(points):
        out.append({"engine": eng.name, "params": eng.label(), "target": target, "ef": ef,
                    "recall10": round(r, 4), "qps_median": round(float(np.median(qps[j])), 1),
                    "qps_rounds": qps[j], **infos[id(eng)]})
    lines = ["| target | engine | params | ef | recall@10 | QPS (median) | build s | RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for o in sorted(out, key=lambda o: (o["target"], -o["qps_median"])):
        lines.append(f"| {o['target']} | {o['engine']} | {o['params']} | {o['ef']} | "
                     f"{o['recall10']} | {o['qps_median']} | {o['build_s']} | {o['rss_mb']} |")
    for eng, _ in built:
        eng.index = None
    return {"rows": out, "table": "\n".join(lines)}


def engines(quick: bool) -> list[Engine]:
    out: list[Engine] = [
        Hnswlib({"M": 16, "efC": 200}),
        Hnswlib({"M": 16, "efC": 100}),
        Faiss({"M": 16, "efC": 40}),
        Faiss({"M": 32, "efC": 40}),
        Faiss({"M": 16, "efC": 100}),
        Faiss({"M": 32, "efC": 100}),
        Usearch({"dtype": "f32", "metric": "ip", "conn": 16, "expA": 128}),
        Usearch({"dtype": "f32", "metric": "ip", "conn": 16, "expA": 128, "api": "public"}),
        Usearch({"dtype": "f16", "metric": "ip", "conn": 16, "expA": 128}),
        Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 128}),
        Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 128, "rerank": 20}),
        Usearch({"dtype": "f16", "metric": "ip", "conn": 16, "expA": 128, "rerank": 20}),
        Usearch({"dtype": "i8", "metric": "cos", "conn": 16, "expA": 64}),
    ]
    if quick:
        keep = {("hnswlib", "M=16 efC=200"), ("faiss", "M=16 efC=40"),
                ("usearch", "dtype=f32 metric=ip conn=16 expA=128"),
                ("usearch", "dtype=i8 metric=cos conn=16 expA=128")}
        out = [e for e in out if (e.name, e.label()) in keep]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="base vectors")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--partial", action="store_true", help="use the chunks written so far")
    ap.add_argument("--quick", action="store_true", help="fewer engines and settings")
    ap.add_argument("--only", default="", help="comma-separated engine names")
    ap.add_argument("--out", type=Path, default=CACHE / "engines_probe.json")
    ap.add_argument("--h2h", type=int, default=0, metavar="ROUNDS",
                    help="only the head-to-head at fixed recall targets, ROUNDS interleaved "
                         "rounds; merged into --out under 'head_to_head'")
    args = ap.parse_args()
    data = load(args.n, args.queries, args.partial)
    log(f"data: {data.x.shape} base, {data.q.shape} queries ({data.source})")
    if args.h2h:
        with threads(2):
            truth = exact_topk(data.x, data.q)
        res = head_to_head(data, truth, args.h2h)
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        old["head_to_head"] = res
        args.out.write_text(json.dumps(old, indent=1) + "\n")
        print(res["table"])
        return
    with threads(2):
        truth = exact_topk(data.x, data.q)
        ftruth = {}
        for sel in SELECTIVITIES:
            keys = data.filters(sel)
            ftruth[sel] = exact_topk(data.x, data.q, mask=lambda i, keys=keys: data.mask(*keys[i]))
    real_sel = {str(s): round(float(np.mean([data.mask(*k).mean() for k in data.filters(s)])), 5)
                for s in SELECTIVITIES}
    log(f"ground truth done; measured selectivities {real_sel}")
    rows = probe_exact(data, truth, ftruth)
    only = set(filter(None, args.only.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="engines_probe_"))
    try:
        for eng in engines(args.quick):
            if only and eng.name not in only:
                continue
            rows += probe_engine(eng, data, truth, ftruth, tmp, quick=args.quick)
            gc.collect()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import faiss
    import hnswlib  # noqa: F401
    import usearch

    meta = {"n": len(data.x), "dim": DIM, "queries": len(data.q), "k": K, "source": data.source,
            "selectivities": real_sel, "raw_f32_mb": round(data.x.nbytes / 2**20, 1),
            "versions": {"hnswlib": "0.8.0", "faiss-cpu": faiss.__version__,
                         "usearch": usearch.__version__, "numpy": np.__version__},
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "query_threads": 1, "build_threads": 2,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "partial": args.partial, "quick": args.quick}
    summary, table = summarize(rows)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "table": table,
                                    "rows": rows}, indent=1) + "\n")
    print(table)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
