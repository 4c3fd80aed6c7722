"""The C HNSW search (vector/_hnsw.c) over faiss's graph arrays, through Ann.search and raw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from autoforge_data.vector import _hnsw
from autoforge_data.vector.ann import Ann, IndexOptions, faiss


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim))
    x = centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, dim))
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def graph() -> tuple[Ann, np.ndarray, np.ndarray]:
    x = clustered(2_000, 96, 1)
    ann = Ann.build(x, "cosine", IndexOptions(connectivity=8))
    return ann, x, clustered(40, 96, 2)


def test_exhaustive_beam_is_exact(graph: tuple[Ann, np.ndarray, np.ndarray]) -> None:
    """With efSearch = n the beam reaches every node: the results are the exact top k, best
    first, with exact inner products as scores."""
    ann, x, queries = graph
    for q in queries[:10]:
        ids, scores = ann.search(q, 10, ef=len(x))
        want = np.argsort(-(x @ q), kind="stable")[:10]
        assert set(ids.tolist()) == set(want.tolist())
        assert np.all(np.diff(scores) <= 1e-6)  # best first
        assert np.allclose(scores, x[ids] @ q, atol=1e-5)


def test_filtered_search_returns_allowed_rows_only(
    graph: tuple[Ann, np.ndarray, np.ndarray],
) -> None:
    """A mask: only allowed ids come back; with efSearch = n they are the exact filtered top k;
    when fewer rows are allowed than asked for, the rest is -1."""
    ann, x, queries = graph
    mask = np.random.default_rng(3).random(len(x)) < 0.2
    for q in queries[:10]:
        ids, _ = ann.search(q, 10, ef=len(x), allowed=mask)
        assert mask[ids].all()
        scores = x @ q
        scores[~mask] = -np.inf
        assert set(ids.tolist()) == set(np.argsort(-scores, kind="stable")[:10].tolist())
    few = np.zeros(len(x), dtype=bool)
    few[[5, 17, 900]] = True
    ids, _ = ann.search(queries[0], 10, ef=len(x), allowed=few)
    assert sorted(ids[:3].tolist()) == [5, 17, 900] and (ids[3:] == -1).all()
    with pytest.raises(ValueError, match="bool per graph id"):
        ann.search(queries[0], 10, allowed=mask[:-1])
    with pytest.raises(ValueError, match="bool per graph id"):
        ann.search(queries[0], 10, allowed=mask.astype(np.uint8))


def test_recall_matches_faiss_own_search(graph: tuple[Ann, np.ndarray, np.ndarray]) -> None:
    """At the default efSearch our loop finds what faiss's search_c finds (same algorithm on
    the same graph), within one result in a hundred."""
    ann, x, queries = graph
    params = faiss.SearchParametersHNSW()
    params.efSearch = 24
    ours = theirs = 0
    for q in queries:
        truth = set(np.argsort(-(x @ q))[:10].tolist())
        ids = np.empty(10, dtype=np.int64)
        dist = np.empty(10, dtype=np.float32)
        ann.index.search_c(1, faiss.swig_ptr(q), 10, faiss.swig_ptr(dist), faiss.swig_ptr(ids),
                           params)
        theirs += len(truth & set(ids.tolist()))
        ours += len(truth & set(ann.search(q, 10, ef=24)[0].tolist()))
    assert ours >= theirs - len(queries) * 10 // 100


def test_l2_metric_scores_are_minus_the_distance() -> None:
    x = clustered(1_000, 32, 4) * np.float32(3.0)
    ann = Ann.build(x, "l2", IndexOptions(connectivity=8))
    q = x[7] + np.float32(0.01)
    ids, scores = ann.search(q, 5, ef=len(x))
    want = np.argsort(np.linalg.norm(x - q, axis=1))[:5]
    assert ids.tolist() == want.tolist()
    assert np.allclose(-scores, np.linalg.norm(x[ids] - q, axis=1), atol=1e-4)


def test_growth_and_permutation_refresh_the_views(
    graph: tuple[Ann, np.ndarray, np.ndarray],
) -> None:
    """After add() (faiss may move every array) and permute() the search reads the new ones."""
    _, x, queries = graph
    ann = Ann.build(x[:500], "cosine", IndexOptions(connectivity=8))
    ann.search(queries[0], 5)  # the views are made
    ann.add(x[500:1_500])
    ids, _ = ann.search(x[1_200], 1, ef=1_500)
    assert ids.tolist() == [1_200]
    order = np.random.default_rng(5).permutation(len(ann))
    ann.permute(order)
    ids, _ = ann.search(x[1_200], 1, ef=1_500)
    assert order[ids[0]] == 1_200
    empty = Ann.build(np.empty((0, 96), np.float32), "cosine", IndexOptions())
    ids, _ = empty.search(queries[0], 3)
    assert ids.tolist() == [-1, -1, -1]


def raw_args(ann: Ann, q: np.ndarray) -> list[Any]:
    mat, nb, off, lev, cum, entry, top = ann._graph()
    out = [np.empty(10, np.int64), np.empty(10, np.float32)]
    return [mat, nb.copy(), off, lev, cum, entry, top, q, 10, 24, False, None, *out]


def test_malformed_graphs_and_arguments_are_errors(
    graph: tuple[Ann, np.ndarray, np.ndarray],
) -> None:
    """Links outside the nodes, short arrays, a bad entry point or k/ef: ValueError, no read
    outside a buffer."""
    ann, _, queries = graph
    q = queries[0]
    good = raw_args(ann, q)
    assert _hnsw.search(*good) == 10

    def fails(pos: int, value: Any, match: str) -> None:
        args = raw_args(ann, q)
        args[pos] = value
        with pytest.raises(ValueError, match=match):
            _hnsw.search(*args)

    broken = good[1].copy()
    broken[:] = len(ann)  # every link points past the last node
    fails(1, broken, "links outside")
    fails(2, good[2][:-1], "inconsistent")  # offsets one short
    fails(3, good[3][:-5], "inconsistent")  # levels short
    fails(5, len(ann), "inconsistent")  # entry point outside
    fails(5, -1, "inconsistent")
    fails(6, 99, "inconsistent")  # a level the graph does not have
    fails(7, q[:50], "inconsistent")  # wrong dimension
    fails(11, np.ones(10, np.uint8), "inconsistent")  # mask shorter than the graph
    fails(8, 0, "k <= ef")
    fails(9, 5, "k <= ef")  # ef < k
    fails(12, np.empty(3, np.int64), "outputs")
    read_only = np.empty(10, np.float32)
    read_only.flags.writeable = False
    fails(13, read_only, "out_dist: a C-contiguous writable buffer")
    fails(7, np.zeros((len(q), 2), np.float32)[:, 0], "query: a C-contiguous buffer")
    with pytest.raises(TypeError, match="14 arguments"):
        _hnsw.search(*good[:13])


def test_filtered_search_has_faiss_semantics(graph: tuple[Ann, np.ndarray, np.ndarray]) -> None:
    """A filtered search does the work of an unfiltered one of the same efSearch (the beam
    holds disallowed nodes too) and returns the best allowed nodes it visited: the results of
    faiss's own search with an IDSelectorBitmap (what IndexOptions' filter rule was calibrated
    with), within one result in a hundred."""
    ann, x, queries = graph
    mask = np.random.default_rng(6).random(len(x)) < 0.2
    bits = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(x), faiss.swig_ptr(bits))
    params = faiss.SearchParametersHNSW()
    params.efSearch = 32
    params.sel = selector
    same = 0
    for q in queries:
        ids = np.empty(10, dtype=np.int64)
        dist = np.empty(10, dtype=np.float32)
        ann.index.search_c(1, faiss.swig_ptr(q), 10, faiss.swig_ptr(dist), faiss.swig_ptr(ids),
                           params)
        ours = ann.search(q, 10, ef=32, allowed=mask)[0]
        same += len(set(ids.tolist()) & set(ours.tolist()))
    assert same >= len(queries) * 10 * 99 // 100
