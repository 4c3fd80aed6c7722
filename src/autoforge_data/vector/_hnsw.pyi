"""Types of the compiled HNSW search (_hnsw.c documents what each argument means)."""

import numpy as np

def search(
    matrix: np.ndarray,
    neighbors: np.ndarray,
    offsets: np.ndarray,
    levels: np.ndarray,
    cum: np.ndarray,
    entry: int,
    max_level: int,
    query: np.ndarray,
    k: int,
    ef: int,
    l2: bool,
    allowed: np.ndarray | None,
    out_ids: np.ndarray,
    out_dist: np.ndarray,
    /,
) -> int: ...
