"""The measurements behind ``IndexOptions``: graph parameters, locality order, filter rule.

On the real corpus of ``bench/vector.py`` (50,000 MiniLM vectors, held-out queries), with our
``Ann`` (faiss HNSW) directly, one query at a time on one thread:

1. graphs: build time (2 threads), recall@10 and QPS at efSearch 20 / 24 / 32 for the default
   M / efConstruction and the alternatives it was chosen against;
2. locality order: the default graph and an identical copy renumbered by k-means cluster, QPS at
   efSearch 24 in interleaved rounds (the same results; only memory order differs);
3. filters: for random filters keeping 50 / 30 / 20 / 10 / 5 / 2% of the rows, recall@10 against
   exact filtered search and time of the in-graph filtered search per efSearch, of the rule's
   efSearch (``IndexOptions.filtered_ef``), of the over-fetch (k / selectivity x 2, post-filter)
   and of exact scores of the allowed rows read in place (``dots_by_index``);
4. codes: the same filters searched by sign-bit codes (``SignCodes.search``: Hamming shortlist
   of the allowed rows, then their exact scores): recall@10 and time per shortlist size and for
   the rule (``IndexOptions.shortlist``), the allowed rows given as a mask and as a row list;
   and the kernel alone per allowed row, which calibrates the planner's ``codes_ns``.

Writes bench/results/vector_tuning.json (rows) and .md.

    .venv/bin/python bench/vector_tuning.py           # ~4 min
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from common import write_results
from vector_data import ensure_cache, load, log, timed_queries

K = 10
GRAPHS = ((24, 100), (32, 100), (24, 200), (16, 200))
EFS = (24, 32, 48, 64, 96, 128, 160, 224, 384)
SELECTIVITIES = (0.5, 0.3, 0.2, 0.1, 0.05, 0.02)
SHORTLISTS = (40, 80, 160, 320)


def run(fn: Callable[[int], np.ndarray], nq: int) -> tuple[list[np.ndarray], float]:
    """(results, microseconds a query) of fn(0..nq-1), one at a time."""
    found, t = timed_queries(fn, nq, cap_s=1e9, min_q=nq)
    return found, 1e6 / t["qps"]


def recall(truth: list[set[int]], found: list[np.ndarray]) -> float:
    hits = sum(len(t & set(f.tolist())) for t, f in zip(truth, found, strict=True))
    return round(hits / (K * len(truth)), 4)


def graphs(x: np.ndarray, q: np.ndarray, truth: list[set[int]], rows: list[dict[str, Any]]) -> Any:
    from autoforge_data.vector.ann import Ann, IndexOptions

    defaults = IndexOptions()
    default = None
    for m, efc in GRAPHS:  # efSearch floor 1: the sweep sets efSearch itself
        opts = replace(defaults, connectivity=m, expansion_add=efc, ef=1)
        start = time.perf_counter()
        ann = Ann.build(x, "cosine", opts)
        build_s = time.perf_counter() - start
        for ef in (20, 24, 32):
            found, us = run(lambda j, ef=ef, ann=ann: ann.search(q[j], K, ef=ef)[0], len(q))
            rows.append({"part": "graph", "M": m, "efC": efc, "ef": ef,
                         "build_s": round(build_s, 2), "recall10": recall(truth, found),
                         "qps": round(1e6 / us, 1)})
            log(f"graph M={m} efC={efc} ef={ef}: {rows[-1]}")
        if (m, efc) == (defaults.connectivity, defaults.expansion_add):
            default = ann
    return default


def locality(ann: Any, q: np.ndarray, rows: list[dict[str, Any]], rounds: int) -> None:
    import faiss

    from autoforge_data.vector.ann import Ann

    ordered = Ann(faiss.clone_index(ann.index), ann.metric, ann.opts)
    order = ordered.locality_order()
    assert order is not None
    ordered.permute(order)
    times: dict[str, list[float]] = {"plain": [], "k-means order": []}
    for rnd in range(rounds):
        pair = [("plain", ann), ("k-means order", ordered)]
        for name, a in pair[:: 1 if rnd % 2 else -1]:
            times[name].append(run(lambda j, a=a: a.search(q[j], K, ef=24)[0], len(q))[1])
    for name, ts in times.items():
        rows.append({"part": "locality", "order": name, "ef": 24,
                     "qps": round(1e6 / statistics.median(ts), 1),
                     "qps_rounds": [round(1e6 / t, 1) for t in ts]})
        log(f"locality {name}: {rows[-1]}")


def search_loop(ann: Any, q: np.ndarray, truth: list[set[int]], rows: list[dict[str, Any]],
                rounds: int) -> None:
    """Our C search (``Ann.search``) against faiss's own ``search_c`` on the same graph."""
    import faiss

    params = faiss.SearchParametersHNSW()
    params.efSearch = 24

    def theirs(j: int) -> np.ndarray:
        ids = np.empty(K, dtype=np.int64)
        dist = np.empty(K, dtype=np.float32)
        v = q[j]
        ann.index.search_c(1, faiss.swig_ptr(v), K, faiss.swig_ptr(dist), faiss.swig_ptr(ids),
                           params)
        return ids

    def ours(j: int) -> np.ndarray:
        return ann.search(q[j], K, ef=24)[0]  # type: ignore[no-any-return]

    times: dict[str, list[float]] = {"faiss search_c": [], "ours (_hnsw.c)": []}
    found: dict[str, list[np.ndarray]] = {}
    for rnd in range(rounds):
        pair = [("faiss search_c", theirs), ("ours (_hnsw.c)", ours)]
        for name, fn in pair[:: 1 if rnd % 2 else -1]:
            found[name], us = run(fn, len(q))
            times[name].append(us)
    for name, ts in times.items():
        rows.append({"part": "loop", "search": name, "ef": 24,
                     "recall10": recall(truth, found[name]),
                     "qps": round(1e6 / statistics.median(ts), 1),
                     "qps_rounds": [round(1e6 / t, 1) for t in ts]})
        log(f"search loop {name}: {rows[-1]}")


def filters(ann: Any, x: np.ndarray, q: np.ndarray, rows: list[dict[str, Any]]) -> None:
    rng = np.random.default_rng(3)
    for sel in SELECTIVITIES:
        masks = [rng.random(len(x)) < sel for _ in range(8)]
        filter_case(ann, x, q, sel, masks=masks, rows=rows)


def filtered_truth(x: np.ndarray, q: np.ndarray, masks: list[np.ndarray]) -> list[set[int]]:
    """The exact top K of query j among the rows ``masks[j % 8]`` allows."""
    truth = []
    for j, v in enumerate(q):
        scores = x @ v
        scores[~masks[j % 8]] = -np.inf
        truth.append(set(np.argpartition(-scores, K)[:K].tolist()))
    return truth


def filter_case(ann: Any, x: np.ndarray, q: np.ndarray, sel: float, *, masks: list[np.ndarray],
                rows: list[dict[str, Any]]) -> None:
    """Every strategy for query j filtered to ``masks[j % 8]``."""
    from autoforge_data.vector.ann import IndexOptions, dots_by_index

    opts = IndexOptions()
    allowed = [np.flatnonzero(m) for m in masks]
    truth = filtered_truth(x, q, masks)

    def in_graph(j: int, ef: int) -> np.ndarray:
        return ann.search(q[j], K, ef=ef, allowed=masks[j % 8])[0]

    def overfetch(j: int, fetch: int) -> np.ndarray:
        ids = ann.search(q[j], fetch)[0]
        ids = ids[ids >= 0]
        return ids[masks[j % 8][ids]][:K]

    def exact(j: int) -> np.ndarray:
        cand = allowed[j % 8]
        return cand[np.argpartition(-dots_by_index(x, q[j], cand), K)[:K]]

    rule = opts.filtered_ef(K, sel, len(x))
    fetch = math.ceil(K / sel * opts.margin)
    cases: list[tuple[str, int, Callable[[int], np.ndarray]]] = [
        *(("in-graph", ef, lambda j, ef=ef: in_graph(j, ef)) for ef in EFS),
        ("in-graph (rule)", rule, lambda j: in_graph(j, rule)),
        ("over-fetch", fetch, lambda j: overfetch(j, fetch)),
        ("exact, rows in place", 0, exact),
    ]
    for how, ef, fn in cases:
        found, us = run(fn, len(q))
        rows.append({"part": "filter", "selectivity": sel, "strategy": how, "ef": ef,
                     "recall10": recall(truth, found), "us": round(us, 1)})
        log(f"filter {sel} {how} ef={ef}: {rows[-1]['recall10']} {rows[-1]['us']} us")


def codes(x: np.ndarray, q: np.ndarray, rows: list[dict[str, Any]]) -> None:
    """Sign-bit codes shortlist + exact re-rank, per selectivity and shortlist size."""
    from autoforge_data.vector.codes import SignCodes

    coder = SignCodes.around_mean(x)
    start = time.perf_counter()
    enc = coder.encode(x)
    log(f"codes: {len(x)} encoded in {time.perf_counter() - start:.3f} s")
    rng = np.random.default_rng(3)
    for sel in (*SELECTIVITIES, 0.01):
        masks = [rng.random(len(x)) < sel for _ in range(8)]
        codes_case(coder, enc, x, q, sel, masks=masks, rows=rows)


def codes_case(coder: Any, enc: np.ndarray, x: np.ndarray, q: np.ndarray, sel: float, *,
               masks: list[np.ndarray], rows: list[dict[str, Any]]) -> None:
    """Query j filtered to ``masks[j % 8]``: shortlist sizes, the rule, the kernel alone."""
    from autoforge_data.vector.ann import IndexOptions

    allowed = [np.flatnonzero(m) for m in masks]
    truth = filtered_truth(x, q, masks)

    def shortlist(j: int, count: int, listed: bool) -> np.ndarray:
        if listed:
            return coder.nearest(enc, q[j], count, rows=allowed[j % 8])  # type: ignore[no-any-return]
        return coder.nearest(enc, q[j], count, mask=masks[j % 8])  # type: ignore[no-any-return]

    def by_codes(j: int, count: int, listed: bool) -> np.ndarray:  # as the index runs it
        if listed:
            return coder.search(enc, x, q[j], count, K, rows=allowed[j % 8])[0]  # type: ignore[no-any-return]
        return coder.search(enc, x, q[j], count, K, mask=masks[j % 8])[0]  # type: ignore[no-any-return]

    n_allowed = int(np.mean([len(a) for a in allowed]))
    rule = IndexOptions().shortlist(K, n_allowed)
    for count, listed in [*((c, False) for c in SHORTLISTS), (rule, False), (rule, True)]:
        found, us = run(lambda j, c=count, li=listed: by_codes(j, c, li), len(q))
        how = f"codes, {'row list' if listed else 'mask'}{' (rule)' if count == rule else ''}"
        rows.append({"part": "codes", "selectivity": sel, "allowed": n_allowed,
                     "strategy": how, "shortlist": count,
                     "recall10": recall(truth, found), "us": round(us, 1)})
        log(f"codes {sel} {how} {count}: {rows[-1]['recall10']} {rows[-1]['us']} us")
    # the kernel alone (no re-rank), per allowed row: the planner's codes_ns / mask_ns
    for listed in (False, True):
        _, us = run(lambda j, li=listed: shortlist(j, K, li), len(q))
        rows.append({"part": "kernel", "selectivity": sel, "allowed": n_allowed,
                     "listed": listed, "us": round(us, 1),
                     "ns_per_allowed_row": round(us * 1000 / n_allowed, 2)})
        log(f"kernel {sel} {'list' if listed else 'mask'}: {us:.1f} us")


def table(rows: list[dict[str, Any]]) -> str:
    out = ["# Vector index tuning (`bench/vector_tuning.py`)", "",
           "Our `Ann` (faiss HNSW) on the real 50k MiniLM corpus, one query at a time on one "
           "thread; the measurements behind the `IndexOptions` defaults.", "",
           "## Graph parameters (build on 2 threads)", "",
           "| M | efC | build s | ef | recall@10 | QPS |", "|---|---|---|---|---|---|"]
    out += [f"| {r['M']} | {r['efC']} | {r['build_s']} | {r['ef']} | {r['recall10']} | "
            f"{r['qps']:,.0f} |" for r in rows if r["part"] == "graph"]
    loc = [r for r in rows if r["part"] == "locality"]
    out += ["", "## Locality order (identical graphs, efSearch 24, median of interleaved rounds)",
            "", "| order | QPS | rounds |", "|---|---|---|"]
    out += [f"| {r['order']} | {r['qps']:,.0f} | {r['qps_rounds']} |" for r in loc]
    if len(loc) == 2:
        out += ["", f"k-means order / plain: **{loc[1]['qps'] / loc[0]['qps']:.2f}×**"]
    loop = [r for r in rows if r["part"] == "loop"]
    out += ["", "## Search loop (the same graph, efSearch 24, median of interleaved rounds)", "",
            "| search | recall@10 | QPS | rounds |", "|---|---|---|---|"]
    out += [f"| {r['search']} | {r['recall10']} | {r['qps']:,.0f} | {r['qps_rounds']} |"
            for r in loop]
    if len(loop) == 2:
        out += ["", f"ours / faiss: **{loop[1]['qps'] / loop[0]['qps']:.2f}×**"]
    out += ["", "## Filters (random rows; recall@10 against exact filtered search)", "",
            "| selectivity | strategy | efSearch / fetch | recall@10 | µs / query |",
            "|---|---|---|---|---|"]
    out += [f"| {r['selectivity']} | {r['strategy']} | {r['ef'] or ''} | {r['recall10']} | "
            f"{r['us']:,.0f} |" for r in rows if r["part"] == "filter"]
    out += ["", "## Codes (sign bits around the mean, Hamming shortlist, exact re-rank)", "",
            "Same kind of random filters; the shortlist is the rows whose exact score is read.",
            "", "| selectivity | allowed rows | strategy | shortlist | recall@10 | µs / query |",
            "|---|---|---|---|---|---|"]
    out += [f"| {r['selectivity']} | {r['allowed']:,} | {r['strategy']} | {r['shortlist']} | "
            f"{r['recall10']} | {r['us']:,.0f} |" for r in rows if r["part"] == "codes"]
    out += ["", "Kernel alone (shortlist of 10, no re-rank):", "",
            "| selectivity | allowed rows | rows as | µs / query | ns / allowed row |",
            "|---|---|---|---|---|"]
    out += [f"| {r['selectivity']} | {r['allowed']:,} | {'list' if r['listed'] else 'mask'} | "
            f"{r['us']:,.1f} | {r['ns_per_allowed_row']} |"
            for r in rows if r["part"] == "kernel"]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved locality rounds")
    ap.add_argument("--only", choices=["codes", "loop"],
                    help="run one part (results not written)")
    ap.add_argument("--partial", action="store_true", help="the embedded prefix (with --only)")
    args = ap.parse_args()
    if not args.partial:
        ensure_cache()
    data = load(50_000, 1000, partial=args.partial)
    x = np.ascontiguousarray(data.x, dtype=np.float32)
    q = np.ascontiguousarray(data.q[: args.queries], dtype=np.float32)
    truth = [set(np.argpartition(-(x @ v), K)[:K].tolist()) for v in q]
    rows: list[dict[str, Any]] = []
    if args.only is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            if args.only == "codes":
                codes(x, q, rows)
            else:
                from autoforge_data.vector.ann import Ann, IndexOptions

                search_loop(Ann.build(x, "cosine", IndexOptions()), q, truth, rows, args.rounds)
        print(table(rows))
        return
    with threadpool_limits(limits=1, user_api="blas"):
        ann = graphs(x, q, truth, rows)
        assert ann is not None, "the default graph is one of GRAPHS"
        locality(ann, q, rows, args.rounds)
        search_loop(ann, q, truth, rows, args.rounds)
        filters(ann, x, q, rows)
        codes(ann.matrix(), q, rows)  # in the graph's (locality) row order, as the index holds them
    write_results("vector_tuning", rows, table(rows))


if __name__ == "__main__":
    main()
