"""The same-run baselines of ``bench/vector.py``: hnswlib, faiss HNSW and numpy exact.

Each is built on the corpus vectors (2 build threads), saved (file size), loaded by a fresh
process (``vector_rss.py``: the resident memory it adds) and loaded back here (load time), then
searched one query at a time on one thread. Filtered search offers each engine its own
mechanisms, and the benchmark keeps the best (fastest at recall@10 >= 0.95, else the most
accurate):

* hnswlib: the ``filter`` callback during the graph search (a C-level ``set.__contains__``);
  over-fetch k/selectivity x 2 and post-filter. (Not its brute-force ``BFIndex``: with a
  filter, hnswlib 0.8.0 returns the best allowed label repeated k times.)
* faiss: ``SearchParametersHNSW(sel=IDSelectorBitmap)`` during the graph search; over-fetch and
  post-filter; a flat scan of the HNSW index's own storage with the same selector (faiss's
  exact filtered search: only the allowed rows are scored);
* numpy: gather the allowed rows and scan them, or scan everything and mask.

Filter callables, bitmaps and row lists are prepared per filter value before timing (the
application would keep them); our backends evaluate their ``Filter`` inside each timed query.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vector_data import DIM, Case, Data, K, fetch_for

Search = Callable[[int], np.ndarray]
EFS = (8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256, 384, 512)


def fresh_process_rss(*argv: str) -> dict[str, Any]:
    """Run ``bench/vector_rss.py`` (a new process loads the index): its RSS delta and load time."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("vector_rss.py")), *argv],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def top_rows(scores: np.ndarray, k: int = K, ids: np.ndarray | None = None) -> np.ndarray:
    kk = min(k, len(scores))
    if kk == 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, kk - 1)[:kk]
    part = part[np.argsort(-scores[part], kind="stable")]
    return part if ids is None else ids[part]


class Baseline:
    """Build / persist / load / search for one library; subclasses fill in the calls."""

    name = ""
    params = ""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.index: Any = None
        self.ef = 0
        self.info: dict[str, Any] = {}

    # lifecycle
    def build(self) -> None: ...
    def save(self, path: Path) -> None: ...
    def load(self, path: Path) -> None: ...

    def prepare(self, tmp: Path) -> dict[str, Any]:
        """Build (timed), save, measure a fresh process loading it (RSS), load it back here."""
        t0 = time.perf_counter()
        self.build()
        build_s = time.perf_counter() - t0
        path = tmp / f"{self.name}.index"
        self.save(path)
        size = path.stat().st_size / 2**20
        self.index = None
        fresh = fresh_process_rss(self.name, str(path), str(self.data.n))
        t0 = time.perf_counter()
        self.load(path)
        load_s = time.perf_counter() - t0
        self.info = {
            "build_s": round(build_s, 2),
            "size_mb": round(size, 1),
            "load_s": round(load_s, 3),
            "mem_mb": fresh["rss_mb"],
        }
        path.unlink()
        return self.info

    # search
    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def search(self, q: np.ndarray) -> np.ndarray: ...

    def batch(self, q: np.ndarray) -> np.ndarray:
        return np.stack([self.search(v) for v in q])

    def strategies(self, case: Case, nq: int) -> dict[str, Search]:
        """Filtered search functions by strategy name (prepared for queries 0..nq-1)."""
        return {}

    def _overfetch(self, case: Case, nq: int, knn: Callable[[np.ndarray, int], np.ndarray]
                   ) -> Search:
        q = self.data.q
        n = self.data.n
        fetch = {case.value(j): fetch_for(K, float(case.mask(j).mean()), n) for j in range(nq)}

        def run(j: int) -> np.ndarray:
            rows = knn(q[j], fetch[case.value(j)])
            rows = rows[rows >= 0]
            return rows[case.mask(j)[rows]][:K]

        return run


class Hnswlib(Baseline):
    name = "hnswlib"

    def __init__(self, data: Data, m: int = 16, ef_construction: int = 200) -> None:
        super().__init__(data)
        self.m, self.efc = m, ef_construction
        self.params = f"M={m} efC={ef_construction}"

    def build(self) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=self.data.n, M=self.m, ef_construction=self.efc,
                              random_seed=100)
        self.index.add_items(self.data.x, np.arange(self.data.n), num_threads=2)

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def load(self, path: Path) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.load_index(str(path), max_elements=self.data.n)
        self.index.set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.set_ef(ef)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.knn_query(q, k=K, num_threads=1)[0][0].astype(np.int64)

    def batch(self, q: np.ndarray) -> np.ndarray:
        return self.index.knn_query(q, k=K, num_threads=1)[0].astype(np.int64)

    def _filtered(self, index: Any, q: np.ndarray, pred: Any, n_allowed: int) -> np.ndarray:
        # knn_query raises when fewer than k allowed items are found: ask for fewer
        kk = min(K, n_allowed)
        while kk > 0:
            try:
                return index.knn_query(q, k=kk, num_threads=1, filter=pred)[0][0].astype(np.int64)
            except RuntimeError:
                kk //= 2
        return np.full(K, -1, dtype=np.int64)

    def strategies(self, case: Case, nq: int) -> dict[str, Search]:
        q = self.data.q
        preds: dict[int, tuple[Any, int]] = {}
        for j in range(nq):
            v = case.value(j)
            if v not in preds:
                allowed = np.flatnonzero(case.mask(j))
                preds[v] = (frozenset(allowed.tolist()).__contains__, len(allowed))
        out: dict[str, Search] = {
            f"graph + filter callback, ef={self.ef}": lambda j: self._filtered(
                self.index, q[j], *preds[case.value(j)]
            ),
        }
        if case.selectivity >= 0.01:

            def knn(v: np.ndarray, fetch: int) -> np.ndarray:
                self.index.set_ef(max(self.ef, fetch))
                try:
                    return self.index.knn_query(v, k=fetch, num_threads=1)[0][0].astype(np.int64)
                finally:
                    self.index.set_ef(self.ef)

            out["over-fetch k/sel×2 + post-filter"] = self._overfetch(case, nq, knn)
        return out


class Faiss(Baseline):
    name = "faiss"

    def __init__(self, data: Data, m: int = 32, ef_construction: int = 100) -> None:
        super().__init__(data)
        self.m, self.efc = m, ef_construction
        self.params = f"HNSW M={m} efC={ef_construction}"
        self.sp: Any = None

    def build(self) -> None:
        import faiss

        faiss.omp_set_num_threads(2)
        self.index = faiss.IndexHNSWFlat(DIM, self.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.efc
        self.index.add(self.data.x)
        faiss.omp_set_num_threads(1)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    def load(self, path: Path) -> None:
        import faiss

        self.index = faiss.read_index(str(path))
        faiss.omp_set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        import faiss

        self.ef = ef
        self.sp = faiss.SearchParametersHNSW(efSearch=ef)

    def search(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q[None, :], K, params=self.sp)[1][0]

    def batch(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q, K, params=self.sp)[1]

    def strategies(self, case: Case, nq: int) -> dict[str, Search]:
        import faiss

        q = self.data.q
        n = self.data.n
        sels: dict[int, tuple[np.ndarray, Any, Any, Any]] = {}
        for j in range(nq):
            v = case.value(j)
            if v not in sels:
                bits = np.packbits(case.mask(j), bitorder="little")
                sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
                hnsw = faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef)
                flat = faiss.SearchParameters(sel=sel)
                sels[v] = (bits, sel, hnsw, flat)  # the bitmap must outlive the selector
        storage = faiss.downcast_index(self.index.storage)

        def graph(j: int) -> np.ndarray:
            return self.index.search(q[j : j + 1], K, params=sels[case.value(j)][2])[1][0]

        def flat(j: int) -> np.ndarray:
            return storage.search(q[j : j + 1], K, params=sels[case.value(j)][3])[1][0]

        out: dict[str, Search] = {f"graph + IDSelectorBitmap, efSearch={self.ef}": graph}
        if case.selectivity >= 0.1:

            def knn(v: np.ndarray, fetch: int) -> np.ndarray:
                sp = faiss.SearchParametersHNSW(efSearch=max(self.ef, fetch))
                return self.index.search(v[None, :], fetch, params=sp)[1][0]

            out["over-fetch k/sel×2 + post-filter"] = self._overfetch(case, nq, knn)
        out["flat scan of its storage + IDSelectorBitmap"] = flat
        return out


class Numpy(Baseline):
    name = "numpy"
    params = "exact inner product, 1 BLAS thread"

    def build(self) -> None:
        self.index = self.data.x

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.save(fh, self.index)

    def load(self, path: Path) -> None:
        self.index = np.load(path)

    def search(self, q: np.ndarray) -> np.ndarray:
        return top_rows(self.index @ q)

    def strategies(self, case: Case, nq: int) -> dict[str, Search]:
        q = self.data.q
        x = self.index
        ids = {case.value(j): np.flatnonzero(case.mask(j)) for j in range(nq)}

        def subset(j: int) -> np.ndarray:
            rows = ids[case.value(j)]
            return top_rows(x[rows] @ q[j], ids=rows)

        def masked(j: int) -> np.ndarray:
            allowed = len(ids[case.value(j)])
            return top_rows(np.where(case.mask(j), x @ q[j], -np.inf))[:allowed]

        out: dict[str, Search] = {"gather allowed rows + scan": subset}
        if case.selectivity >= 0.1:
            out["full scan + mask"] = masked
        return out
