"""Sign-bit codes (vector/codes.py) and the compiled Hamming kernel behind them (_bits.c)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from autoforge_data.vector import _bits
from autoforge_data.vector.codes import SignCodes
from autoforge_data.vector.mirror import Rows


def hamming(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The reference: popcount of the XOR, row by row."""
    return np.bitwise_count(codes ^ query).sum(axis=1)


def reference_top(codes: np.ndarray, query: np.ndarray, allowed: np.ndarray, r: int) -> list[int]:
    """The r allowed rows of smallest distance, ties by row order (a stable sort)."""
    rows = np.sort(allowed)
    d = hamming(codes[rows], query)
    return sorted(rows[np.argsort(d, kind="stable")[:r]].tolist())


def tied_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors of +-1 where only 12 dimensions vary: few distinct distances, many ties."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, dim), dtype=np.float32)
    varying = rng.choice(dim, size=min(12, dim), replace=False)
    x[:, varying] = rng.choice([-1.0, 1.0], size=(n, len(varying)))
    return x


@pytest.mark.parametrize("dim", [40, 64, 100, 384, 1536])
@pytest.mark.parametrize("fraction", [0.0, 0.003, 0.1, 0.5, 1.0])
def test_kernel_matches_the_reference(dim: int, fraction: float) -> None:
    """hamming_top returns exactly the r nearest allowed rows (mask or row list), ties broken
    by row order, and all allowed rows when r exceeds them; the query is encoded in C exactly
    as SignCodes encodes rows."""
    rng = np.random.default_rng(dim * 100 + int(fraction * 1000))
    n = 3_001  # not a multiple of 8: the mask's 8-byte steps meet a ragged end
    x = tied_vectors(n, dim, dim)
    coder = SignCodes(np.zeros(dim, dtype=np.float32))
    codes = coder.encode(x)
    query = tied_vectors(1, dim, dim + 1)[0]
    qcode = coder.encode_one(query)
    mask = rng.random(n) < fraction
    allowed = np.flatnonzero(mask)
    for r in (0, 1, 10, 160, n + 5):
        out = np.empty(r, dtype=np.int64)
        want = reference_top(codes, qcode, allowed, r)
        got = _bits.hamming_top(codes, coder.center, query, r, out, mask.view(np.uint8), True)
        assert sorted(out[:got].tolist()) == want
        got = _bits.hamming_top(codes, coder.center, query, r, out, allowed, False)
        assert sorted(out[:got].tolist()) == want
        assert got == min(r, len(allowed))


def test_kernel_checks_every_buffer_before_reading() -> None:
    """Wrong sizes, types and rows outside the codes are errors, never reads out of bounds."""
    codes = np.zeros((100, 6), dtype=np.uint64)
    center, query = np.zeros(384, dtype=np.float32), np.ones(384, dtype=np.float32)
    out = np.empty(10, dtype=np.int64)
    mask = np.ones(100, dtype=np.uint8)

    def call(*args: Any) -> int:
        return int(_bits.hamming_top(*args))

    with pytest.raises(IndexError, match="out of range"):
        call(codes, center, query, 5, out, np.array([3, 100], dtype=np.int64), False)
    with pytest.raises(IndexError, match="out of range"):
        call(codes, center, query, 5, out, np.array([-1], dtype=np.int64), False)
    with pytest.raises(ValueError, match="shorter"):
        call(codes, center, query, 5, out, mask[:99], True)
    with pytest.raises(ValueError, match="smaller than r"):
        call(codes, center, query, 11, out, mask, True)
    with pytest.raises(ValueError, match="smaller than r"):
        call(codes, center, query, -1, out, mask, True)
    with pytest.raises(ValueError, match="one dimension"):
        call(codes, center, query[:383], 5, out, mask, True)
    with pytest.raises(ValueError, match="one dimension"):
        call(codes, center.astype(np.float16), query, 5, out, mask, True)
    with pytest.raises(ValueError, match="whole rows"):
        call(codes.ravel()[:599], center, query, 5, out, mask, True)
    read_only = np.empty(10, dtype=np.int64)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        call(codes, center, query, 5, read_only, mask, True)
    with pytest.raises(ValueError, match="C-contiguous"):
        call(np.zeros((100, 12), np.uint64)[:, ::2], center, query, 5, out, mask, True)
    with pytest.raises(ValueError, match="int64"):
        call(codes, center, query, 5, out, np.zeros(3, dtype=np.uint8), False)
    with pytest.raises(TypeError, match="7 arguments"):
        call(codes, center, query, 5, out, mask)


def test_encode_is_the_packed_sign_around_the_centre() -> None:
    """A code is bit i = (x_i > centre_i), little-endian within bytes, zero-padded to 64 bits."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 100)).astype(np.float32)
    coder = SignCodes.around_mean(x)
    assert coder.words == 2
    codes = coder.encode(x)
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    assert np.array_equal(bits[:, :100], (x > x.mean(axis=0)).astype(np.uint8))
    assert not bits[:, 100:].any()
    assert np.array_equal(coder.encode_one(x[7]), codes[7])


def test_nearest_finds_near_vectors_and_checks_its_arguments() -> None:
    """The shortlist of a vector's own code holds it (distance 0); bad arguments are errors."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 384)).astype(np.float32)
    coder = SignCodes.around_mean(x)
    codes = coder.encode(x)
    mask = np.zeros(500, dtype=bool)
    mask[::3] = True
    for i in (0, 3, 300):
        assert i in coder.nearest(codes, x[i], 5, mask=mask).tolist()
        assert i in coder.nearest(codes, x[i], 5, rows=np.flatnonzero(mask)).tolist()
    assert 1 not in coder.nearest(codes, x[1], 500, mask=mask).tolist()  # not allowed
    with pytest.raises(ValueError, match="exactly one"):
        coder.nearest(codes, x[0], 5)
    with pytest.raises(ValueError, match="exactly one"):
        coder.nearest(codes, x[0], 5, mask=mask, rows=np.arange(3))
    with pytest.raises(ValueError, match="bools"):
        coder.nearest(codes, x[0], 5, mask=mask[:-1])
    with pytest.raises(ValueError, match="uint64"):
        coder.nearest(codes.astype(np.int64), x[0], 5, mask=mask)
    with pytest.raises(ValueError, match="384 values"):
        coder.nearest(codes, x[0][:100], 5, mask=mask)


def test_codes_follow_their_rows() -> None:
    """Rows keep every row's code equal to the code of its vector through upserts, appends
    (growing), deletes, compaction and permutation."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 64)).astype(np.float32)
    rows = Rows(64, "cosine", np.arange(300, dtype=np.int64), x)
    rows.enable_codes()
    coder = rows.coder
    assert coder is not None

    def check() -> None:
        assert rows.codes is not None
        live = np.flatnonzero(rows.alive[: rows.n])
        assert np.array_equal(rows.codes[live], coder.encode(rows.vecs[live]))

    check()
    for num in range(300, 1_500):  # past the first growth of the arrays
        rows.upsert(num, rng.standard_normal(64).astype(np.float32))
    rows.upsert(5, rng.standard_normal(64).astype(np.float32))  # changed in place
    check()
    for num in range(0, 1_500, 3):
        rows.delete(num)
    rows.compact()
    check()
    order = rng.permutation(rows.n)
    moved = rows.vecs[order]
    rows.permute(order)  # all but the vectors: their owner (the graph) moves those
    rows.vecs = moved
    check()
    assert rows.coder is coder  # the centre stays: codes of old and new rows compare
    assert rows.codes is not None and rows.memory_bytes() >= rows.codes.nbytes


def test_search_is_the_shortlist_reranked_exactly() -> None:
    """codes_search = the Hamming shortlist, then the k highest inner products among it, best
    first, scores exact; with a shortlist of every allowed row it is the exact filtered top k."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4_000, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    coder = SignCodes.around_mean(x)
    codes = coder.encode(x)
    mask = rng.random(len(x)) < 0.3
    listed = np.flatnonzero(mask)
    for q in x[:5] + np.float32(0.05):
        short = coder.nearest(codes, q, 200, mask=mask)
        want = short[np.argsort(-(x[short] @ q), kind="stable")[:10]]
        for kw in ({"mask": mask}, {"rows": listed}):
            ids, scores = coder.search(codes, x, q, 200, 10, **kw)  # type: ignore[arg-type]
            assert ids.tolist() == want.tolist()
            assert np.allclose(scores, x[ids] @ q, atol=1e-5)
            assert np.all(np.diff(scores) <= 0)
        ids, _ = coder.search(codes, x, q, len(listed), 10, rows=listed)
        scores = x @ q
        scores[~mask] = -np.inf
        assert ids.tolist() == np.argsort(-scores, kind="stable")[:10].tolist()
    few = np.zeros(len(x), dtype=bool)
    few[[3, 9]] = True
    ids, scores = coder.search(codes, x, x[3], 50, 10, mask=few)
    assert sorted(ids.tolist()) == [3, 9] and len(scores) == 2
    with pytest.raises(ValueError, match="fewer rows"):
        coder.search(codes, x[:100], x[0], 50, 10, mask=mask)
    with pytest.raises(ValueError, match="k <= r"):
        coder.search(codes, x, x[0], 5, 10, mask=mask)
    with pytest.raises(ValueError, match="float32"):
        coder.search(codes, x.astype(np.float64), x[0], 50, 10, mask=mask)
    with pytest.raises(IndexError, match="out of range"):
        coder.search(codes, x, x[0], 50, 10, rows=np.array([1, 4_000]))
