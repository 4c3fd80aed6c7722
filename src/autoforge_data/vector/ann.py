"""The usearch HNSW graph behind the ``memory`` index, and the tuning of the in-memory indexes.

Chosen by measurement on 50,000 real MiniLM vectors (``bench/.cache/engines_probe.*``): int8
vectors with cosine distance, connectivity 16, expansion_add 128, and the candidates re-ranked
exactly in float32 by the caller. That reached recall@10 0.95 at the highest single-query QPS of
usearch, hnswlib and faiss, built 2x faster than hnswlib, and takes 25 MB beside the float32
matrix the re-rank and exact search need anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index as UsearchIndex

from autoforge_data.errors import Corrupt
from autoforge_data.vector.base import Nums, Vector
from autoforge_data.vector.mirror import Rows


@dataclass(frozen=True)
class IndexOptions:
    """Tuning of the in-memory indexes; the defaults are measured (see the module docstring)."""

    # Below this many live vectors: exact search and no ANN index. A scan of 5,000 contiguous
    # rows (125-245 us) costs at most ~2x an ANN query (~110 us) and gives recall 1.0.
    small: int = 5_000
    ef: int = 32  # usearch expansion_search floor (raised to the fetch size)
    rerank: int = 3  # ANN candidates per wanted result, re-ranked exactly in float32
    margin: float = 2.0  # over-fetch = k / selectivity x margin (recall >= 0.96 at 1-50 %)
    # Planner cost model (ns), measured at 384-d on 2 cores (idle and busy runs, 1 BLAS thread):
    # exact scan of gathered rows, of contiguous rows, and ANN search + exact re-rank per
    # fetched candidate plus a fixed cost per ANN query.
    gather_ns: float = 75.0
    scan_ns: float = 30.0
    candidate_ns: float = 1_500.0
    ann_ns: float = 60_000.0
    refresh_interval: float = 0.5  # a search first applies the journal if older than this (s)
    save_every: int = 5_000  # journal entries applied since the last snapshot that trigger one
    connectivity: int = 16
    expansion_add: int = 128
    build_threads: int = 2


class Ann:
    """The usearch HNSW index over one model's vectors; labels are prompt nums."""

    def __init__(self, dimension: int, metric: str, opts: IndexOptions) -> None:
        self.opts = opts
        # int8 needs values in [-1, 1]: fine for unit (cosine) vectors; l2 keeps half floats.
        self.index = UsearchIndex(
            ndim=dimension,
            metric="cos" if metric == "cosine" else "l2sq",
            dtype="i8" if metric == "cosine" else "f16",
            connectivity=opts.connectivity,
            expansion_add=opts.expansion_add,
            expansion_search=opts.ef,
        )
        self.removed = 0  # tombstones in the graph since it was built

    @classmethod
    def build(cls, rows: Rows, opts: IndexOptions) -> Ann:
        """A new index over the live rows."""
        ann = cls(rows.dimension, rows.metric, opts)
        nums, vecs = rows.live_arrays()
        if len(nums):
            ann.index.add(nums.astype(np.uint64), vecs, threads=opts.build_threads)
        return ann

    def __len__(self) -> int:
        return len(self.index)

    def upsert(self, nums: Nums, vecs: np.ndarray, existing: np.ndarray) -> None:
        """Add vectors; ``existing`` marks nums already present (removed first: keys are unique)."""
        if existing.any():
            self.remove(nums[existing])
        if len(nums):
            self.index.add(nums.astype(np.uint64), vecs, threads=self.opts.build_threads)

    def remove(self, nums: Nums) -> None:
        """Remove vectors by num (absent nums are ignored)."""
        if len(nums):
            self.index.remove(nums.astype(np.uint64))
            self.removed += len(nums)

    def search(self, query: Vector, count: int) -> Nums:
        """Up to ``count`` nearest nums (approximate), best first."""
        # usearch's setter has no annotations, so mypy sees a read-only property
        self.index.expansion_search = max(self.opts.ef, count)  # type: ignore[misc]
        keys = self.index.search(query, count, threads=1).keys
        return np.asarray(keys, dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write the index file."""
        self.index.save(str(path))

    @classmethod
    def load(cls, path: Path, count: int, dimension: int, metric: str, opts: IndexOptions) -> Ann:
        """Load an index file; Corrupt if it is damaged or does not hold ``count`` vectors."""
        ann = cls(dimension, metric, opts)
        try:
            ann.index.load(str(path))
        except (RuntimeError, ValueError) as exc:
            raise Corrupt(f"ANN index file unreadable: {exc}") from None
        if len(ann.index) != count or ann.index.ndim != dimension:
            raise Corrupt(f"ANN index holds {len(ann.index)} vectors, expected {count}")
        return ann
