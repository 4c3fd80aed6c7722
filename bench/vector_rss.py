"""Resident memory an index adds when a fresh process loads it (run by ``bench/vector.py``).

Measured in a new process so memory the benchmark freed earlier cannot be reused and hide the
cost: RSS after the imports and the query vectors, then the index is loaded, 20 queries run (its
pages are touched, as in service), and RSS is read again. Prints one JSON object.

    python bench/vector_rss.py hnswlib PATH N | faiss PATH N | numpy PATH N
    python bench/vector_rss.py memory DB_FOLDER INDEX_ROOT N
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

CACHE = Path(__file__).resolve().parent / ".cache"


def rss() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss / 2**20)


def queries() -> np.ndarray:
    """20 cached query vectors, or (no cache, e.g. --synthetic) random unit vectors: any touch
    the index the same way."""
    if (CACHE / "queries_emb.npy").exists():
        return np.load(CACHE / "queries_emb.npy")[:20].astype(np.float32)
    q = np.random.default_rng(0).standard_normal((20, 384)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def main() -> None:
    kind, path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[-1])
    q = queries()
    keep: object
    if kind == "hnswlib":
        import hnswlib

        r0 = rss()
        t0 = time.perf_counter()
        index = hnswlib.Index(space="ip", dim=q.shape[1])
        index.load_index(str(path), max_elements=n)
        load_s = time.perf_counter() - t0
        for v in q:
            index.knn_query(v, k=10, num_threads=1)
        keep = index
    elif kind == "faiss":
        import faiss

        r0 = rss()
        t0 = time.perf_counter()
        index = faiss.read_index(str(path))
        load_s = time.perf_counter() - t0
        for v in q:
            index.search(v[None, :], 10)
        keep = index
    elif kind == "numpy":
        r0 = rss()
        t0 = time.perf_counter()
        x = np.load(path)
        load_s = time.perf_counter() - t0
        for v in q:
            np.argpartition(-(x @ v), 10)
        keep = x
    elif kind == "memory":
        from autoforge_data.db.engine import Database
        from autoforge_data.settings import Settings
        from autoforge_data.vector.base import Filter
        from autoforge_data.vector.index import open_index
        from autoforge_data.vector.store import get_model

        settings = Settings.load("dev", base_dir=path, data_dir=path / "data", db_driver="libsql",
                                 synchronous="NORMAL")
        db = Database(settings)
        model = get_model(db, "all-MiniLM-L6-v2")
        r0 = rss()
        t0 = time.perf_counter()
        index = open_index(db, model, "memory", Path(sys.argv[3]))
        load_s = time.perf_counter() - t0
        for v in q:
            index.search(v, 10, Filter())
        keep = index
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    out = {"kind": kind, "rss_mb": round(rss() - r0, 1), "load_s": round(load_s, 3)}
    del keep
    print(json.dumps(out))


if __name__ == "__main__":
    main()
