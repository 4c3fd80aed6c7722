"""The HNSW graph behind the ``memory`` index (faiss ``IndexHNSWFlat``), and the index tuning.

Why faiss HNSW over float32, holding the only copy of the vectors (measured on 50,000 real
MiniLM vectors, ``bench/results/vector.md``):

* The vectors are stored once. The graph's own float32 storage *is* the matrix the exact scans
  and the filters read (:meth:`Ann.matrix` is a numpy view of it, row i = graph id i), so the
  index costs the raw vectors plus the links (M=24: ~210 bytes a vector). The former usearch
  design kept its int8 copy next to our float32 matrix (1.79x the raw vectors in RSS).
* Distances in the graph are exact float32 inner products: the top k need no re-rank.
* The search is our own C loop (``_hnsw.c``) over faiss's graph arrays and the matrix, read in
  place: the classic HNSW search, with each expanded node's unseen neighbours prefetched and
  their distances computed four at a time (AVX2/FMA when the CPU has them). On the same graph
  it runs at 1.23x faiss's own ``search_c`` at the same recall (``bench/results/
  vector_tuning.md``, idle run; 1.00x once on a slowed machine), without the SWIG call, and it
  takes a filter as the numpy mask itself (a byte a row) instead of packing it into an
  ``IDSelectorBitmap`` each query.

faiss HNSW cannot delete: a changed or deleted row stays in the graph as a tombstone (the rows'
``alive`` flag filters it out of results) until the owner rebuilds the graph.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss as _faiss_typed
import numpy as np

from autoforge_data.errors import Corrupt
from autoforge_data.vector import _hnsw
from autoforge_data.vector.base import Vector


@dataclass(frozen=True)
class IndexOptions:
    """Tuning of the in-memory indexes; the defaults are measured (see the module docstring)."""

    # Below this many live vectors: exact search and no ANN index. A scan of 5,000 contiguous
    # rows (125-245 us) costs at most ~2x an ANN query and gives recall 1.0.
    small: int = 5_000
    ef: int = 24  # efSearch floor (raised to the fetch size): recall@10 ~0.97 at 50k MiniLM
    rerank: float = 1.0  # ANN results fetched per wanted result when nothing is filtered
    margin: float = 2.0  # over-fetch = k / selectivity x margin (recall >= 0.96 at 1-50 %)
    # A filtered graph search (disallowed rows are walked through, never returned) with
    # efSearch = max(ef, k) x filter_ef / selectivity^filter_exp, at least max(ef, k) + 8.
    # Calibrated on the real corpus (bench/results/vector_tuning.md: 50k MiniLM vectors, random
    # filters, 400 queries): at 50 / 30 / 20 / 10 / 5% the rule gives efSearch 36 / 51 / 67 /
    # 109 / 176 and recall@10 0.967 / 0.968 / 0.969 / 0.969 / 0.957 (10%: 320 us against 539 us
    # for over-fetching 200). Only for at least filter_min of the rows and filter_rows rows:
    # below 5% the graph routes to too few allowed rows (2%: 0.947 at efSearch 334, 918 us), and
    # exact scores of them are cheaper anyway (5%: 462 vs 484 us, 2%: 174 us).
    filter_ef: float = 0.9
    filter_exp: float = 0.7
    # A filtered graph search costs about this many unfiltered ones of the same efSearch (it
    # walks through disallowed rows): at 50% the rule's efSearch 36 took 165 us for recall
    # 0.967, over-fetching 40 167 us for 0.972, so it is used only when cheaper by that measure.
    filter_cost: float = 1.25
    filter_min: float = 0.05
    filter_rows: int = 2_000
    # Planner cost model (ns), measured at 384-d on 2 cores (1 BLAS thread): exact scores of
    # scattered rows (read in place from the 73 MiB matrix: 86-120 ns each on the real corpus,
    # memory bound), of contiguous rows, and ANN search per fetched candidate plus a fixed cost
    # per ANN query.
    gather_ns: float = 120.0
    scan_ns: float = 30.0
    candidate_ns: float = 1_500.0
    ann_ns: float = 40_000.0
    # Filtered searches by sign-bit codes (codes.py): the Hamming distance of every allowed
    # row's code (codes_ns a row, plus mask_ns a row of the mask when the rows come as one),
    # then exact scores of a shortlist of the nearest, read in place (gather_ns each). On the
    # real corpus (vector_tuning.md, random filters, 400 queries) recall@10 depends on the
    # shortlist and hardly on how many rows are allowed: 8k rows 0.955-0.962, 16k 0.980-0.991,
    # 32k 0.99-0.998 for 500 to 25,000 allowed rows; 12k gives 0.974-0.979. The kernel alone
    # took ~6-30 ns an allowed row (scattered rows cost more) and ~0.7 ns a mask row.
    use_codes: bool = True  # False: no codes kept, filtered searches use the graph or a scan
    # Fewer allowed rows than this: their exact scores (recall 1.0). Above it the shortlist
    # reads 12 k rows instead of all of them: 1% filters (500 rows) read them exactly at
    # 0.43-0.49x the unfiltered QPS in a first (slowed, not kept) bench/vector.py run with 2,000
    # here; with 300 they take codes at 1.32-1.37x (vector.md, idle run) and a shortlist of 120
    # of 500 rows keeps recall@10 ~0.99 (vector.md, vector_tuning.md).
    codes_rows: int = 300
    codes_ns: float = 15.0
    mask_ns: float = 0.7
    codes_fixed_ns: float = 15_000.0
    shortlist_k: int = 12
    meta_keys: int = 16  # metadata keys mirrored in memory at most (4 bytes a row each)
    refresh_interval: float = 0.5  # a search first applies the journal if older than this (s)
    save_every: int = 5_000  # journal entries applied since the last snapshot that trigger one
    # After a build, rows are reordered by their nearest of up to this many k-means centroids
    # (0: never), so the vectors a graph search reads are near each other in memory: same
    # graph, same results. 1.08x the QPS on the real 50k x 384 corpus in the idle run of
    # 2026-11-27 and 1.05x in the idle vector_tuning.md run of 2026-11-28 (the vectors, 73 MiB,
    # do not fit the 32 MiB L3); 0.85x once on a machine slowed ~3.5x (rounds +-20% apart).
    locality_clusters: int = 256
    # HNSW M (2M links a vector on the base layer) and efConstruction (vector_tuning.md, efSearch
    # 24, build on 2 threads): M=24 efC=100 recall@10 0.963 at 10,825 QPS, build 8.3 s; M=32
    # efC=100 0.968 at 8,785, 8.6 s; M=24 efC=200 0.965 at 8,405, 16.9 s; M=16 efC=200 0.956 at
    # 10,140, 14.2 s. Earlier runs put M=24 and M=32 at efC 100 on one recall-QPS curve within
    # run-to-run noise (their builds are not deterministic on 2 threads); M=24 has 25% fewer
    # links. efC 200 breaks the build target.
    connectivity: int = 24
    expansion_add: int = 100
    build_threads: int = 2

    def filtered_ef(self, k: int, selectivity: float, rows: int) -> int:
        """efSearch of a graph search filtered to ``selectivity`` of ``rows`` (the rule above;
        ``bench/vector_tuning.py`` measures it)."""
        base = max(self.ef, k)
        scale: float = self.filter_ef / selectivity**self.filter_exp
        want = math.ceil(base * scale)
        return min(rows, max(base + 8, want))

    def shortlist(self, k: int, allowed: int) -> int:
        """Rows whose exact score a codes search reads for ``k`` results among ``allowed``."""
        return min(allowed, self.shortlist_k * k)

    def ann_cost(self, candidates: int) -> float:
        """Modelled ns of one ANN query that fetches ``candidates`` (the planner's and the
        unfiltered short path's one formula)."""
        return self.ann_ns + self.candidate_ns * candidates


faiss: Any = _faiss_typed  # its bundled stubs lack search_c, get_xb, HNSW fields, ...
_OMP = threading.Lock()  # faiss's OpenMP thread count is process-wide: one build sets it at once


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """faiss's OpenMP threads set to ``count`` for one build step, then restored."""
    with _OMP:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, count))
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


def dots_by_index(matrix: np.ndarray, query: Vector, rows: np.ndarray) -> np.ndarray:
    """``matrix[rows] @ query`` without copying the rows out first (faiss
    ``fvec_inner_products_by_idx``): on the real 50k x 384 matrix 500 scattered rows take
    43 us instead of 82, 5,000 take 590 us instead of 1,080."""
    ids = np.ascontiguousarray(rows, dtype=np.int64)
    out = np.empty(len(ids), dtype=np.float32)
    if not len(ids):
        return out
    if int(ids.min()) < 0 or int(ids.max()) >= len(matrix):  # C code: never read out of bounds
        raise IndexError("row index out of range")
    if matrix.dtype != np.float32 or not matrix.flags.c_contiguous:
        raise ValueError("dots_by_index needs a C-contiguous float32 matrix")
    q = np.ascontiguousarray(query, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(
        faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(matrix), faiss.swig_ptr(ids),
        matrix.shape[1], 1, len(ids),
    )
    return out


class Ann:
    """A faiss HNSW graph over float32 vectors; graph id i is row i of the owner's rows."""

    def __init__(self, index: Any, metric: str, opts: IndexOptions) -> None:
        self.index = index
        self.metric = metric
        self.opts = opts
        self.dimension = int(index.d)
        self.removed = 0  # tombstones in the graph since it was built (counted by the owner)
        self._arrays: tuple[Any, ...] | None = None  # numpy views of the graph (see _graph)

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str, opts: IndexOptions) -> Ann:
        """A new graph over ``vectors`` (rows in order), built on ``opts.build_threads``."""
        dim = int(vectors.shape[1])
        kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        index = faiss.IndexHNSWFlat(dim, opts.connectivity, kind)
        index.hnsw.efConstruction = opts.expansion_add
        ann = cls(index, metric, opts)
        ann.add(vectors)
        return ann

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (graph ids continue from ``len(self)``); invalidates earlier views."""
        if not len(vectors):
            return
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        self._arrays = None  # faiss may reallocate every array
        with _threads(self.opts.build_threads):
            self.index.add(x)

    def locality_order(self) -> np.ndarray | None:
        """A row order that keeps near vectors near in memory (None: too few rows to cluster).

        Rows sorted (stably) by their nearest k-means centroid, at most
        ``opts.locality_clusters`` centroids trained on 40 sampled rows each (8 iterations,
        fixed seed: the same vectors give the same order). Costs ~0.3 s at 50k x 384.
        """
        n, clusters = len(self), min(self.opts.locality_clusters, len(self) // 40)
        if clusters < 8:
            return None
        x = self.matrix()
        sample = np.random.default_rng(n).choice(n, size=min(n, 40 * clusters), replace=False)
        with _threads(self.opts.build_threads):
            km = faiss.Kmeans(
                self.dimension, clusters, niter=8, seed=1234,
                spherical=self.metric == "cosine", verbose=False,
            )
            km.train(np.ascontiguousarray(x[np.sort(sample)]))
            _, nearest = km.index.search(x, 1)
        order: np.ndarray = np.argsort(nearest[:, 0], kind="stable").astype(np.int64)
        return order

    def permute(self, order: np.ndarray) -> None:
        """Renumber the graph: new id j is old id ``order[j]`` (links and vectors move with
        it; the same searches give the same vectors). Invalidates earlier :meth:`matrix` views."""
        perm = np.ascontiguousarray(order, dtype=np.int64)
        if len(perm) != len(self) or not np.array_equal(np.sort(perm), np.arange(len(self))):
            raise ValueError("not a permutation of the graph's ids")
        self._arrays = None
        self.index.permute_entries(perm)

    def matrix(self) -> np.ndarray:
        """The stored vectors as an (n, d) float32 view (valid until the next :meth:`add`)."""
        n = len(self)
        if n == 0:
            return np.empty((0, self.dimension), dtype=np.float32)
        storage = faiss.downcast_index(self.index.storage)
        flat = faiss.rev_swig_ptr(storage.get_xb(), n * self.dimension)
        return np.asarray(flat).reshape(n, self.dimension)

    def _graph(self) -> tuple[Any, ...]:
        """Numpy views of the graph's arrays and vectors for the C search (made once after each
        change: a view costs ~1 us to make, the search ~50)."""
        if self._arrays is None:
            hnsw, n = self.index.hnsw, len(self)

            def view(vec: Any, dtype: Any) -> np.ndarray:
                arr: np.ndarray = faiss.rev_swig_ptr(vec.data(), vec.size())
                return arr.view(dtype)

            self._arrays = (
                self.matrix(),
                view(hnsw.neighbors, np.int32),
                view(hnsw.offsets, np.uint64),
                view(hnsw.levels, np.int32),
                faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int32),
                int(hnsw.entry_point),
                int(hnsw.max_level),
            )
            if not (len(self._arrays[2]) == n + 1 and len(self._arrays[3]) == n):
                raise Corrupt("the HNSW graph's arrays do not match its vectors")
        return self._arrays

    def search(
        self, query: Vector, count: int, *, ef: int = 0, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(graph ids, scores) of up to ``count`` nearest vectors, best first; scores are inner
        products (cosine) or minus the Euclidean distance (l2). Ids of -1 mean "fewer found".

        ``ef`` raises efSearch above ``max(opts.ef, count)``. ``allowed`` (a bool per graph
        id, at least ``len(self)`` of them) makes the search return allowed ids only: it still
        walks through the others.
        """
        ef = max(self.opts.ef, count, ef)
        ids = np.full(count, -1, dtype=np.int64)
        dist = np.zeros(count, dtype=np.float32)
        if len(self) == 0 or count < 1:
            return ids, dist
        if allowed is not None and (allowed.dtype != np.bool_ or len(allowed) < len(self)):
            raise ValueError("allowed must be a bool per graph id")
        q = query if query.flags.c_contiguous else np.ascontiguousarray(query)
        mat, nb, off, lev, cum, entry, top = self._graph()
        l2 = self.metric != "cosine"
        mask = None if allowed is None else allowed.view(np.uint8)
        _hnsw.search(mat, nb, off, lev, cum, entry, top, q, count, ef, l2, mask, ids, dist)
        if not l2:
            return ids, -dist
        return ids, -np.sqrt(np.maximum(dist, 0.0))

    def save(self, path: Path) -> None:
        """Write the graph and its vectors to one file."""
        faiss.write_index(self.index, str(path))

    def graph_bytes(self) -> int:
        """Bytes the graph's links and levels take (the vectors are counted with the rows)."""
        hnsw = self.index.hnsw
        links = int(hnsw.neighbors.size()) * 4 + int(hnsw.offsets.size()) * 8
        return links + int(hnsw.levels.size()) * 4 + int(hnsw.assign_probas.size()) * 8

    def serialize(self) -> np.ndarray:
        """The index file's bytes (graph and vectors), taken while the caller holds its lock."""
        buf: np.ndarray = faiss.serialize_index(self.index)
        return buf

    @classmethod
    def load(cls, path: Path, count: int, dimension: int, metric: str, opts: IndexOptions) -> Ann:
        """Load an index file; Corrupt if it is damaged or does not hold ``count`` vectors."""
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise Corrupt(f"ANN index file unreadable: {str(exc).splitlines()[0]}") from None
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise Corrupt(f"ANN index file holds a {type(index).__name__}, not an HNSW graph")
        want = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if index.ntotal != count or index.d != dimension or index.metric_type != want:
            raise Corrupt(f"ANN index holds {index.ntotal} x {index.d} vectors, expected {count}")
        return cls(index, metric, opts)
