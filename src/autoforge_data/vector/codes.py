"""Sign-bit codes of the vectors: the memory index's shortlist for filtered searches.

A row's code is one bit per dimension: is the vector above the corpus mean (the centre) there.
The Hamming distance between two codes estimates the angle between the centred vectors, so the
rows whose codes are nearest the query's hold the true nearest neighbours with high
probability; their exact scores (read in place from the float32 matrix) then pick the top k.

Why (``bench/results/vector_tuning.md``, real 50k MiniLM corpus): a filtered search that keeps
10% of the rows walks the HNSW graph through the 90% it may not return, while the codes of the
5,000 allowed rows (48 bytes each at 384-d) are compared in tens of microseconds by the compiled
kernel (``_bits.c``) and only a shortlist of 12 k rows is scored exactly (recall@10 ~0.975 at
any number of allowed rows from 500 to 25,000). The bits are taken around the corpus mean so
each one splits the rows about in half (MiniLM's dimensions are not zero-mean).

The codes cost ``dimension / 8`` bytes a row (2.4 MB at 50k x 384, 3% of the vectors).
"""

from __future__ import annotations

import numpy as np

from autoforge_data.vector import _bits


class SignCodes:
    """Encoder of sign-bit codes around a fixed centre, and the Hamming shortlist over them."""

    def __init__(self, center: np.ndarray) -> None:
        self.center = np.ascontiguousarray(center, dtype=np.float32)
        self.dimension = len(self.center)
        self.words = (self.dimension + 63) // 64  # uint64 words a code takes

    @classmethod
    def around_mean(cls, vectors: np.ndarray) -> SignCodes:
        """Codes centred on the mean of ``vectors`` (zero when there are none)."""
        if not len(vectors):
            return cls(np.zeros(vectors.shape[1], dtype=np.float32))
        return cls(vectors.mean(axis=0, dtype=np.float64).astype(np.float32))

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(m, words) uint64 codes of an (m, dimension) matrix, in chunks (no m x d temporary)."""
        m = len(vectors)
        out = np.zeros((m, self.words), dtype=np.uint64)
        raw = out.view(np.uint8)
        width = (self.dimension + 7) // 8
        for a in range(0, m, 8_192):
            bits = np.asarray(vectors[a : a + 8_192], dtype=np.float32) > self.center
            raw[a : a + len(bits), :width] = np.packbits(bits, axis=1, bitorder="little")
        return out

    def encode_one(self, vector: np.ndarray) -> np.ndarray:
        """The (words,) code of one vector."""
        code: np.ndarray = self.encode(vector[None, :])[0]
        return code

    def search(
        self,
        codes: np.ndarray,
        matrix: np.ndarray,
        query: np.ndarray,
        shortlist: int,
        k: int,
        *,
        mask: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, inner products) of the k best among the ``shortlist`` allowed rows whose codes
        are nearest the query's, best first: one C call (``_bits.codes_search``) for the
        Hamming pass, the exact scores read in place from ``matrix`` and the top k."""
        q, allowed, is_mask = self._args(codes, query, mask, rows)
        if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[1] != self.dimension:
            raise ValueError(f"matrix must be (n, {self.dimension}) float32")
        ids = np.empty(k, dtype=np.int64)
        scores = np.empty(k, dtype=np.float32)
        found = _bits.codes_search(
            codes, self.center, q, matrix, shortlist, k, allowed, is_mask, ids, scores
        )
        return ids[:found], scores[:found]

    def _args(
        self,
        codes: np.ndarray,
        query: np.ndarray,
        mask: np.ndarray | None,
        rows: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """The checked query and the allowed rows as the kernel takes them."""
        if (mask is None) == (rows is None):
            raise ValueError("give exactly one of mask and rows")
        if codes.dtype != np.uint64 or codes.ndim != 2 or codes.shape[1] != self.words:
            raise ValueError(f"codes must be an (n, {self.words}) uint64 array")
        q = np.ascontiguousarray(query, dtype=np.float32)
        if q.shape != (self.dimension,):
            raise ValueError(f"query must have {self.dimension} values")
        if mask is not None:
            if mask.dtype != np.bool_ or mask.shape != (len(codes),):
                raise ValueError(f"mask must be {len(codes)} bools")
            return q, mask.view(np.uint8), True
        return q, np.asarray(rows, dtype=np.int64), False

    def nearest(
        self,
        codes: np.ndarray,
        query: np.ndarray,
        count: int,
        *,
        mask: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Up to ``count`` rows of smallest Hamming distance to the query's code among the
        allowed ones (``mask``: a bool per row of ``codes``; ``rows``: row numbers), unordered.

        Ties at the cut are broken by row order; rows outside ``codes`` raise IndexError.
        """
        q, allowed, is_mask = self._args(codes, query, mask, rows)
        out = np.empty(max(count, 0), dtype=np.int64)
        found = _bits.hamming_top(codes, self.center, q, count, out, allowed, is_mask)
        return out[: int(found)]
