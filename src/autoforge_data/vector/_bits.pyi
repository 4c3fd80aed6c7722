"""Types of the compiled Hamming kernel (_bits.c documents what each argument means; any
C-contiguous buffer of the right item size is accepted, numpy arrays are what we pass)."""

import numpy as np

def hamming_top(
    codes: np.ndarray,
    center: np.ndarray,
    query: np.ndarray,
    r: int,
    out: np.ndarray,
    allowed: np.ndarray,
    is_mask: bool,
    /,
) -> int: ...

def codes_search(
    codes: np.ndarray,
    center: np.ndarray,
    query: np.ndarray,
    matrix: np.ndarray,
    r: int,
    k: int,
    allowed: np.ndarray,
    is_mask: bool,
    out_ids: np.ndarray,
    out_scores: np.ndarray,
    /,
) -> int: ...
