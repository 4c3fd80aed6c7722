"""Vector search benchmark: our backends against hnswlib, faiss HNSW and numpy, in one run.

The corpus (``bench/.cache``: real passages, real all-MiniLM-L6-v2 vectors; built by
``bench/corpus.py`` + ``bench/embed_corpus.py`` when missing) is loaded into a fresh libSQL
database: one user per corpus owner, one prompt per passage with its status, owner, created time
and metadata (topic, lang), its vector through ``VectorStore.upsert_many`` (no re-embedding).
Then, for every engine x setting x filter (selectivity 1.0, 0.5, 0.1, 0.01, 0.001):
build time, on-disk and in-memory size, recall@10 against exact filtered numpy search, QPS and
p50/p95 latency one query at a time on one thread.

* ours: ``memory`` (faiss HNSW over the vectors it holds, filter mirror, planner, snapshot),
  ``exact``, ``libsql``
  (DiskANN with the tuned options; the default options are built at 10,000 vectors only: at
  50,000 they took 734 s in bench/results/libsql_tuning.md, half this benchmark's budget), all
  through ``VectorIndex.search(vector, 10, Filter)``. Filters: status (50%), metadata topic
  (10%), metadata lang (1%), owner (0.1%): the spec's set (the memory and exact backends mirror
  the metadata keys in memory; libsql gets an expression index on both keys); and the same
  selectivities from created-time windows (10% and 1% of the year).
* baselines (``vector_engines.py``): hnswlib M=16 efC=200 and faiss HNSW M=32 efC=100 with ef
  chosen as the smallest reaching recall@10 0.95 (and the smallest matching our memory backend's
  recall, for the head-to-head), numpy exact; filtered with their best native mechanism.
* the memory backend's warm start (reopen from its snapshot), hybrid search through
  ``services.search`` with the real MiniLM embedder (200 query texts, embedding included, then
  with the query vector cached), and ``MiniLMEmbedder`` throughput against raw
  sentence-transformers ``encode`` on the same 512 texts (alternating, median of 3).

Unfiltered QPS of memory / hnswlib / faiss is the median of interleaved rounds (the machine has
2 shared cores). A cell stops after ``--cap`` seconds once 200 queries ran (its row says how
many). Writes bench/results/vector.json (rows) and vector.md (tables + targets).

    .venv/bin/python bench/vector.py --quick          # 10,000 vectors, 200 queries: a check
    .venv/bin/python bench/vector.py                  # 50,000 vectors, 1,000 queries, ~15 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from common import write_results
from vector_data import (
    CACHE,
    DIM,
    Case,
    Data,
    K,
    Truth,
    cases,
    dir_mb,
    ensure_cache,
    load,
    log,
    mean_recall,
    synthetic,
    timed_queries,
)
from vector_engines import EFS, Baseline, Faiss, Hnswlib, Numpy, fresh_process_rss

MODEL = "all-MiniLM-L6-v2"
SPEC_SET = ("none", "status=active", "metadata.topic", "metadata.lang", "owner_id")
OURS = ("memory", "exact", "libsql")


@dataclass
class Run:
    """Everything one benchmark run collects."""

    args: argparse.Namespace
    data: Data
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    loads: list[tuple[str, tuple[float, float, float]]] = field(default_factory=list)

    def add(self, engine: str, ours: bool, params: str, case: Case | None, **kw: Any) -> dict:
        row = {
            "engine": engine,
            "ours": ours,
            "params": params,
            "n": kw.pop("n", self.data.n),
            "dim": DIM,
            "selectivity": case.selectivity if case else kw.pop("selectivity", 1.0),
            "filter": case.name if case else kw.pop("filter", None),
            "recall10": kw.pop("recall10", None),
            "qps": kw.pop("qps", None),
            "p50_ms": kw.pop("p50_ms", None),
            "p95_ms": kw.pop("p95_ms", None),
            "build_s": kw.pop("build_s", None),
            "size_mb": kw.pop("size_mb", None),
            **kw,
        }
        self.rows.append(row)
        return row

    def phase(self, name: str, start: float) -> None:
        self.phases[name] = round(time.perf_counter() - start, 1)
        self.loads.append((name, os.getloadavg()))


# --------------------------------------------------------------------------- database


def open_db(folder: Path) -> Any:
    from autoforge_data.db.engine import Database
    from autoforge_data.settings import Settings

    settings = Settings.load(
        "dev", base_dir=folder, data_dir=folder / "data", db_driver="libsql", synchronous="NORMAL"
    )
    return Database(settings)


def load_db(db: Any, data: Data) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Users, prompts with the corpus metadata, then vectors; (row of num, owner ids, times)."""
    from autoforge_data.db import migrate
    from autoforge_data.db.uow import UnitOfWork
    from autoforge_data.ids import new_id
    from autoforge_data.vector.embedders import content_hash
    from autoforge_data.vector.store import VectorStore, get_model

    times: dict[str, float] = {}
    migrate.upgrade(db)
    owner_ids = [new_id() for _ in range(1000)]
    pids = [new_id() for _ in range(data.n)]
    t0 = time.perf_counter()
    with UnitOfWork(db, write=True) as uow:
        uow.executemany(
            "INSERT INTO users (id, email, username) VALUES (?, ?, ?)",
            [(u, f"owner-{i:04d}@example.com", f"owner-{i:04d}") for i, u in enumerate(owner_ids)],
        )
        prompts = []
        for i, m in enumerate(data.meta):
            created = m["created_iso"].replace("Z", ".000Z")
            prompts.append((
                pids[i], owner_ids[int(m["owner"].split("-")[1])], data.sources[i][:200],
                data.texts[i], m["status"], json.dumps({"topic": m["topic"], "lang": m["lang"]}),
                created, created,
            ))
        uow.executemany(
            "INSERT INTO prompts (id, owner_id, title, content, status, metadata, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            prompts,
        )
        uow.commit()
    times["prompts_s"] = round(time.perf_counter() - t0, 1)
    model = get_model(db, MODEL)
    store = VectorStore(model)
    t0 = time.perf_counter()
    for lo in range(0, data.n, 1000):
        hi = min(data.n, lo + 1000)
        batch = [
            (pids[i], 1, content_hash(f"{data.sources[i][:200]}\n{data.texts[i]}", MODEL),
             data.x[i])
            for i in range(lo, hi)
        ]
        with UnitOfWork(db, write=True) as uow:
            store.upsert_many(uow, batch)
            uow.commit()
    times["vectors_s"] = round(time.perf_counter() - t0, 1)
    with UnitOfWork(db) as uow:
        by_id = dict(uow.fetchall("SELECT prompt_id, num FROM prompt_keys"))
    nums = np.array([by_id[p] for p in pids], dtype=np.int64)
    row_of = np.full(int(nums.max()) + 1, -1, dtype=np.int64)
    row_of[nums] = np.arange(data.n)
    return row_of, owner_ids, times


def backend_fn(index: Any, data: Data, case: Case, row_of: np.ndarray, nq: int, *,
               strategies: Counter[str]) -> Callable[[int], np.ndarray]:
    flts = {case.value(j): case.filter_of(case.value(j)) for j in range(nq)}
    q = data.q

    def run(j: int) -> np.ndarray:
        hits = index.search(q[j], K, flts[case.value(j)])
        strategies[hits.strategy] += 1
        return row_of[hits.nums]

    return run


def measure_backend(run: Run, engine: str, index: Any, *, params: str, all_cases: list[Case],
                    truth: Truth, row_of: np.ndarray, base: dict[str, Any],
                    skip: tuple[str, ...] = ()) -> None:
    args, data = run.args, run.data
    for case in all_cases:
        if case.name in skip:
            continue
        strategies: Counter[str] = Counter()
        fn = backend_fn(index, data, case, row_of, data.nq, strategies=strategies)
        found, t = timed_queries(fn, data.nq, cap_s=args.cap, min_q=args.min_q)
        rec = mean_recall(truth, case, found)
        row = run.add(engine, True, params, case, recall10=rec, **t, **base,
                      sel_actual=round(case.actual(data.nq), 5), filter_kind=case.kind,
                      strategy=", ".join(f"{k} {v}" for k, v in strategies.most_common()))
        log(f"  {engine} {case.name}: recall {rec}, {row['qps']} QPS, p50 {row['p50_ms']} ms "
            f"({t['queries']} q; {row['strategy']})")


# --------------------------------------------------------------------------- baselines


def sweep_ef(eng: Baseline, truth: Truth, none: Case) -> list[tuple[int, float]]:
    """Recall@10 per ef (batched queries, one thread: the same results as one at a time)."""
    out = []
    for ef in EFS:
        eng.set_ef(ef)
        found = eng.batch(eng.data.q)
        out.append((ef, mean_recall(truth, none, list(found))))
        if out[-1][1] >= 0.999:
            break
    return out


def smallest_ef(sweep: list[tuple[int, float]], target: float) -> tuple[int, float]:
    for ef, rec in sweep:
        if rec >= target:
            return ef, rec
    return sweep[-1]


def baseline_filtered(run: Run, eng: Baseline, ef: int, all_cases: list[Case], truth: Truth
                      ) -> None:
    args, data = run.args, run.data
    eng.set_ef(ef)
    for case in all_cases:
        if case.name not in SPEC_SET or case.name == "none":
            continue
        tried = []
        for label, fn in eng.strategies(case, data.nq).items():
            found, t = timed_queries(fn, data.nq, cap_s=args.cap, min_q=args.min_q)
            rec = mean_recall(truth, case, found)
            tried.append((label, rec, t))
            log(f"  {eng.name} {case.name} [{label}]: recall {rec}, {t['qps']} QPS")
        good = [c for c in tried if c[1] >= 0.95]
        best = max(good, key=lambda c: c[2]["qps"]) if good else max(tried, key=lambda c: c[1])
        for label, rec, t in tried:
            run.add(eng.name, False, f"{eng.params} ef={ef}" if ef else eng.params, case,
                    recall10=rec, **t, build_s=eng.info["build_s"], size_mb=eng.info["size_mb"],
                    mem_mb=eng.info["mem_mb"], strategy=label, chosen=label == best[0],
                    sel_actual=round(case.actual(data.nq), 5), filter_kind=case.kind)


def head_to_head(run: Run, entries: list[tuple[str, Callable[[int], np.ndarray]]], truth: Truth,
                 none: Case) -> dict[str, dict[str, Any]]:
    """Unfiltered, interleaved rounds (order rotated); median QPS and that round's latencies."""
    nq = run.data.nq
    results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in entries}
    recalls: dict[str, float] = {}
    for rnd in range(run.args.rounds):
        order = entries[rnd % len(entries):] + entries[: rnd % len(entries)]
        for label, fn in order:
            found, t = timed_queries(fn, nq, cap_s=1e9, min_q=nq)
            results[label].append(t)
            if label not in recalls:
                recalls[label] = mean_recall(truth, none, found)
    out = {}
    for label, ts in results.items():
        med = sorted(ts, key=lambda t: t["qps"])[len(ts) // 2]
        out[label] = {**med, "recall10": recalls[label], "qps_rounds": [t["qps"] for t in ts]}
    return out


def build_rounds(db: Any, model: Any, idx_root: Path, data: Data, rounds: int = 3
                 ) -> dict[str, list[float]]:
    """Cold builds of the memory index (from libSQL, snapshot written), hnswlib and faiss,
    interleaved (order rotated) so the machine's load hits them alike."""
    import shutil

    from autoforge_data.vector.index import open_index

    out: dict[str, list[float]] = {"memory": [], "memory-ann": [], "hnswlib": [], "faiss": []}
    labels = ["memory", "hnswlib", "faiss"]
    for rnd in range(rounds):
        for label in labels[rnd % 3:] + labels[: rnd % 3]:
            start = time.perf_counter()
            if label == "memory":
                shutil.rmtree(idx_root, ignore_errors=True)
                mem = open_index(db, model, "memory", idx_root)
                out["memory"].append(time.perf_counter() - start)
                out["memory-ann"].append(float(mem.stats()["build_s"]))
                mem.close()
            else:
                eng = Hnswlib(data) if label == "hnswlib" else Faiss(data)
                eng.build()
                out[label].append(time.perf_counter() - start)
                eng.index = None
    return out


# --------------------------------------------------------------------------- libsql


def libsql_index(db: Any, model: Any, options: Any, meta_keys: tuple[str, ...] = ()
                 ) -> tuple[Any, dict[str, Any]]:
    from autoforge_data.vector.libsql_index import (
        LibsqlIndex,
        ensure_index,
        ensure_metadata_index,
    )

    t0 = time.perf_counter()
    ensure_index(db, model, options)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for key in meta_keys:  # the hot metadata keys get an expression index on prompts
        ensure_metadata_index(db, key)
    meta_s = time.perf_counter() - t0
    index = LibsqlIndex(db, model, create=False)
    size, method = index.index_size()
    return index, {
        "build_s": round(build_s, 1),
        "size_mb": round(size / 2**20, 1),
        "size_method": method,
        "db_file_mb": round(db.target.path.stat().st_size / 2**20, 1),
        "options": list(index.options),
        "search_l": index.search_l,
        "metadata_indexes": list(meta_keys),
        "metadata_index_s": round(meta_s, 2),
    }


def libsql_default_compare(run: Run, tmp: Path) -> None:
    """Default against tuned options on the first ``--libsql-default-n`` vectors, same method."""
    from autoforge_data.vector.libsql_index import drop_index
    from autoforge_data.vector.store import get_model

    m = min(run.args.libsql_default_n, run.data.n)
    nq = min(200, run.data.nq)
    sub = head(run.data, m, nq)
    none = cases(sub, [""] * 1000)[0]
    truth = Truth(sub, [none])
    folder = tmp / "cmp"
    folder.mkdir()
    with open_db(folder) as db:
        row_of, _, _ = load_db(db, sub)
        model = get_model(db, MODEL)
        for label, options in (("tuned", None), ("default", ())):
            log(f"libsql {label} options at n={m}: building")
            index, info = libsql_index(db, model, options)
            strategies: Counter[str] = Counter()
            fn = backend_fn(index, sub, none, row_of, nq, strategies=strategies)
            found, t = timed_queries(fn, nq, cap_s=run.args.cap, min_q=nq)
            rec = mean_recall(truth, none, found)
            opts = ",".join(info["options"]) or "metric=cosine (defaults)"
            run.add("libsql", True, f"{label}: {opts}", none, n=m, recall10=rec, **t, **info,
                    comparison="default-vs-tuned",
                    strategy=", ".join(f"{k} {v}" for k, v in strategies.items()))
            log(f"  {label}: build {info['build_s']} s, index {info['size_mb']} MiB, recall {rec}"
                f", {t['qps']} QPS")
            index.close()
            drop_index(db, model)


def head(data: Data, m: int, nq: int) -> Data:
    sub = replace(data, x=data.x[:m], q=data.q[:nq], texts=data.texts[:m],
                  sources=data.sources[:m], meta=data.meta[:m], query_texts=data.query_texts[:nq])
    sub.cols = {k: v[:m] for k, v in data.cols.items()}
    return sub


# --------------------------------------------------------------------------- hybrid, embedder


def _latency_row(lat: list[float]) -> dict[str, Any]:
    arr = np.array(lat) * 1000
    return {"queries": len(lat), "qps": round(len(lat) / sum(lat), 1),
            "p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p95_ms": round(float(np.percentile(arr, 95)), 3)}


def hybrid(run: Run, db: Any, idx_root: Path) -> None:
    """Per query text, back to back: hybrid (the query is embedded: an LRU miss), hybrid again
    (its vector is cached), vector mode (cached), keyword mode; then the same for a 3-word
    query made of the text's first three non-stopwords: load changes hit every cell alike."""
    from autoforge_data.services.search import SearchContext, query_terms, search
    from autoforge_data.vector.embedders import MiniLMEmbedder

    texts = run.data.query_texts[: run.args.hybrid_queries]
    shorts = [" ".join(query_terms(t)[:3]) for t in texts]
    ctx = SearchContext.open(db, kind="memory", data_dir=idx_root, embedder=MiniLMEmbedder())
    modes = (
        ("hybrid", "memory backend + FTS5, RRF; MiniLM query embedding included", "hybrid"),
        ("hybrid", "memory backend + FTS5, RRF; query vector cached (LRU hit)", "hybrid"),
        ("vector-text", "memory backend, vector mode; query vector cached (LRU hit)", "vector"),
        ("keyword", "FTS5: any word, most words first, then bm25; snippets", "keyword"),
    )
    queries = {"whole passage": texts, "3 words": shorts}
    cells = [(e, p, m, kind) for kind in queries for e, p, m in modes]
    lat: list[list[float]] = [[] for _ in cells]
    results = 0
    try:
        assert ctx.embedder is not None
        ctx.embedder.embed(["warm up the model: load it before timing"])
        search(ctx, "warm up the search path", k=10, mode="hybrid")
        for j in range(len(texts)):
            for i, (_, _, mode, kind) in enumerate(cells):
                t0 = time.perf_counter()
                found = search(ctx, queries[kind][j], k=10, mode=mode)
                lat[i].append(time.perf_counter() - t0)
                results += len(found)
    finally:
        ctx.close()
    chars = {kind: round(float(np.mean([len(x) for x in qs])), 1) for kind, qs in queries.items()}
    for (engine, params, mode, kind), ls in zip(cells, lat, strict=True):
        t = _latency_row(ls)
        run.add(engine, True, f"{params}; {kind}", None, **t, mode=mode, query_chars=chars[kind])
        log(f"  {engine} [{params}; {kind}]: {t['qps']} QPS, p50 {t['p50_ms']} ms, "
            f"p95 {t['p95_ms']} ms")
    run.notes["hybrid_results_per_query"] = round(results / (len(cells) * len(texts)), 2)


def embedder_throughput(run: Run) -> None:
    """``MiniLMEmbedder.embed`` against raw ``encode`` on the same batches of 64 texts,
    alternating batch by batch (who goes first alternates too); 3 rounds over the texts,
    throughput per round, median. Wall and CPU time."""
    import torch
    from sentence_transformers import SentenceTransformer

    from autoforge_data.vector.embedders import MiniLMEmbedder, minilm_model_dir

    texts = run.data.texts[: run.args.embed_texts]
    batches = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    ours = MiniLMEmbedder(batch_size=64)
    raw = SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)

    def ours_fn(batch: list[str]) -> np.ndarray:
        return ours.embed(batch)

    def raw_fn(batch: list[str]) -> np.ndarray:
        return raw.encode(batch, batch_size=64, normalize_embeddings=True,
                          convert_to_numpy=True, show_progress_bar=False)

    ours_fn(batches[0])  # load and warm both models
    raw_fn(batches[0])
    fns = {"ours": ours_fn, "raw": raw_fn}
    wall: dict[str, list[float]] = {"ours": [], "raw": []}
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    diff = 0.0
    for _ in range(3):
        w = {"ours": 0.0, "raw": 0.0}
        c = {"ours": 0.0, "raw": 0.0}
        for b, batch in enumerate(batches):
            out = {}
            for label in ("ours", "raw") if b % 2 == 0 else ("raw", "ours"):
                c0, t0 = time.process_time(), time.perf_counter()
                out[label] = fns[label](batch)
                w[label] += time.perf_counter() - t0
                c[label] += time.process_time() - c0
            diff = max(diff, float(np.max(np.abs(out["ours"] - out["raw"]))))
        for label, seconds in w.items():
            wall[label].append(seconds)
            cpu[label].append(c[label])
    ratios = [r / o for o, r in zip(wall["ours"], wall["raw"], strict=True)]
    for label, engine, is_ours, params in (
        ("ours", "embedder", True, "MiniLMEmbedder.embed, batch_size=64"),
        ("raw", "sentence-transformers", False, "SentenceTransformer.encode, batch_size=64, "
                                                "normalize_embeddings=True"),
    ):
        med = statistics.median(wall[label])
        run.add(engine, is_ours, params, None, qps=round(len(texts) / med, 1), texts=len(texts),
                seconds=[round(s, 2) for s in wall[label]],
                cpu_seconds=[round(s, 2) for s in cpu[label]],
                qps_cpu=round(len(texts) / statistics.median(cpu[label]), 1),
                round_ratios=[round(x, 3) for x in ratios] if is_ours else None,
                torch_threads=torch.get_num_threads(),
                max_abs_diff_vs_raw=diff if is_ours else 0.0)
        log(f"  {engine}: {len(texts) / med:.1f} texts/s (wall {wall[label]}, cpu {cpu[label]})")


# --------------------------------------------------------------------------- main


def main() -> None:  # noqa: PLR0912, PLR0915 - one run, in order
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="corpus vectors")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries")
    ap.add_argument("--skip-libsql", action="store_true", help="no libSQL DiskANN index")
    ap.add_argument("--quick", action="store_true", help="n=10000, queries=200: a fast check")
    ap.add_argument("--cap", type=float, default=8.0, help="seconds per cell once --min-q ran")
    ap.add_argument("--min-q", type=int, default=200, help="queries every cell runs at least")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved head-to-head rounds")
    ap.add_argument("--libsql-default-n", type=int, default=10_000,
                    help="vectors for the libSQL default-vs-tuned options build")
    ap.add_argument("--hybrid-queries", type=int, default=200)
    ap.add_argument("--embed-texts", type=int, default=512)
    ap.add_argument("--no-write", action="store_true", help="print, do not write results")
    ap.add_argument("--synthetic", action="store_true",
                    help="clustered stand-in vectors instead of the real corpus (no hybrid or "
                         "embedder phases); writes bench/results/vector.synthetic.*")
    ap.add_argument("--build-rounds", type=int, default=3, help="interleaved cold builds")
    ap.add_argument("--partial", action="store_true",
                    help="if bench/embed_corpus.py has not finished: the corpus prefix it has "
                         "embedded so far (n shrinks to it; the report says so)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries, args.cap, args.rounds = 10_000, 200, 4.0, 3
        args.min_q = min(args.min_q, 200)
    started = time.perf_counter()
    load0 = os.getloadavg()
    if not args.synthetic:
        ensure_cache(args.partial)
    t0 = time.perf_counter()
    data = synthetic(args.n, args.queries) if args.synthetic else load(
        args.n, args.queries, args.partial)
    args.min_q = min(args.min_q, data.nq)
    run = Run(args, data)
    run.loads.append(("start", load0))
    log(f"data: {data.n} x {DIM} corpus, {data.nq} queries; load average {load0}")

    from autoforge_data.vector.index import IndexOptions, open_index
    from autoforge_data.vector.snapshot import index_dir
    from autoforge_data.vector.store import get_model

    with tempfile.TemporaryDirectory(dir=CACHE, prefix="vector-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "main").mkdir()
        db = open_db(tmp / "main")
        try:
            row_of, owner_ids, load_times = load_db(db, data)
            run.notes["load"] = load_times
            log(f"database loaded: {load_times}")
            all_cases = cases(data, owner_ids)
            truth = Truth(data, all_cases)
            none = all_cases[0]
            run.notes["selectivity"] = {c.name: round(c.actual(data.nq), 5) for c in all_cases}
            run.phase("data + database + ground truth", t0)

            with threadpool_limits(limits=1, user_api="blas"):
                # ---- baselines: build, persist, load, ef sweep
                t0 = time.perf_counter()
                engines: list[Baseline] = [Hnswlib(data), Faiss(data), Numpy(data)]
                sweeps: dict[str, list[tuple[int, float]]] = {}
                for eng in engines:
                    info = eng.prepare(tmp)
                    log(f"{eng.name} {eng.params}: {info}")
                    if eng.name != "numpy":
                        sweeps[eng.name] = sweep_ef(eng, truth, none)
                        log(f"  ef sweep: {sweeps[eng.name]}")
                run.notes["ef_sweeps"] = sweeps
                run.phase("baselines: build + ef sweep", t0)

                # ---- ours: memory (cold build, warm starts) and exact
                t0 = time.perf_counter()
                model = get_model(db, MODEL)
                idx_root = tmp / "idx"
                builds = build_rounds(db, model, idx_root, data, args.build_rounds)
                cold_s = statistics.median(builds["memory"])
                for eng in engines[:2]:
                    eng.info["build_s"] = round(statistics.median(builds[eng.name]), 2)
                    eng.info["build_runs_s"] = [round(b, 2) for b in builds[eng.name]]
                snap_mb = dir_mb(index_dir(idx_root, db.settings.env, model))
                ann_build_s = statistics.median(builds["memory-ann"])
                log(f"builds (interleaved rounds): {builds}")
                warm = []
                for _ in range(3):
                    start = time.perf_counter()
                    mem = open_index(db, model, "memory", idx_root)
                    warm.append(time.perf_counter() - start)
                    if len(warm) < 3:
                        mem.close()
                        del mem
                fresh = fresh_process_rss("memory", str(tmp / "main"), str(idx_root), str(data.n))
                mem_st = mem.stats()
                raw_mb = data.x.nbytes / 2**20
                mem_base = {
                    "build_s": round(cold_s, 2),
                    "size_mb": round(snap_mb, 1),
                    "mem_mb": fresh["rss_mb"],
                    "mem_reported_mb": mem_st["memory_mb"],
                    "ann_build_s": round(ann_build_s, 2),
                    "build_runs_s": [round(b, 2) for b in builds["memory"]],
                    "ann_graph_mb": mem_st["ann_graph_mb"],
                }
                o = IndexOptions()
                mem_params = (f"faiss HNSW M={o.connectivity} efC={o.expansion_add} graph, "
                              f"own C search ef>={o.ef}, rows in k-means order "
                              f"({o.locality_clusters}), vectors held once, filter mirror, "
                              "in-graph filter, sign-bit codes shortlist, planner")
                run.add("memory-warm-start", True, "reopen from snapshot + journal replay", None,
                        load_s=round(statistics.median(warm), 3),
                        runs_s=[round(w, 3) for w in warm],
                        fresh_process_load_s=fresh["load_s"], rss_mb=fresh["rss_mb"],
                        mem_reported_mb=mem_st["memory_mb"], build_s=round(cold_s, 2),
                        size_mb=round(snap_mb, 1), raw_f32_mb=round(raw_mb, 1))
                log(f"memory warm start: {warm} s; fresh process {fresh} (raw f32 {raw_mb:.1f})")
                start = time.perf_counter()
                exact = open_index(db, model, "exact")
                ex_s = time.perf_counter() - start
                exact_base = {"build_s": round(ex_s, 2), "size_mb": 0.0,
                              "mem_mb": exact.stats()["memory_mb"]}
                run.phase("ours: memory build + warm start, exact open", t0)

                # ---- unfiltered head-to-head at matched recall
                t0 = time.perf_counter()
                mem_counter: Counter[str] = Counter()
                mem_fn = backend_fn(mem, data, none, row_of, data.nq, strategies=mem_counter)
                found, _ = timed_queries(mem_fn, data.nq, cap_s=1e9, min_q=data.nq)
                mem_recall = mean_recall(truth, none, found)
                picks: dict[str, dict[str, tuple[int, float]]] = {}
                entries: list[tuple[str, Callable[[int], np.ndarray]]] = [("memory", mem_fn)]
                for eng in engines[:2]:
                    picks[eng.name] = {"ef95": smallest_ef(sweeps[eng.name], 0.95),
                                       "match": smallest_ef(sweeps[eng.name], mem_recall)}
                    below = [p for p in sweeps[eng.name] if p[1] < mem_recall]
                    if below:  # the other end of the recall bracket, for the interpolation
                        picks[eng.name]["below"] = below[-1]
                    seen: set[int] = set()
                    for key, (ef, _) in picks[eng.name].items():
                        label = f"{eng.name}@{key}"
                        if ef in seen:
                            continue
                        seen.add(ef)

                        def fn(j: int, eng: Baseline = eng, ef: int = ef) -> np.ndarray:
                            if eng.ef != ef:
                                eng.set_ef(ef)
                            return eng.search(data.q[j])

                        entries.append((label, fn))
                h2h = head_to_head(run, entries, truth, none)
                for label, res in h2h.items():
                    t = {k: res[k] for k in ("queries", "qps", "p50_ms", "p95_ms")}
                    extra = {"qps_rounds": res["qps_rounds"], "h2h": True}
                    if label == "memory":
                        run.add("memory", True, mem_params, none, recall10=res["recall10"], **t,
                                **mem_base, **extra, strategy="ann (planner)")
                        continue
                    name, key = label.split("@")
                    eng = next(e for e in engines if e.name == name)
                    ef = picks[name][key][0]
                    keys = [k for k, v in picks[name].items() if v[0] == ef]
                    run.add(name, False, f"{eng.params} ef={ef}", none, recall10=res["recall10"],
                            **t, build_s=eng.info["build_s"], size_mb=eng.info["size_mb"],
                            mem_mb=eng.info["mem_mb"], load_s=eng.info["load_s"], **extra,
                            build_runs_s=eng.info.get("build_runs_s"),
                            ef=ef, ef_role="+".join(keys), chosen="ef95" in keys)
                    log(f"  {label} ef={ef}: recall {res['recall10']}, {res['qps']} QPS "
                        f"{res['qps_rounds']}")
                log(f"  memory: recall {h2h['memory']['recall10']}, {h2h['memory']['qps']} QPS "
                    f"{h2h['memory']['qps_rounds']}")
                run.notes["picks"] = picks
                numpy_eng = engines[2]
                found, t = timed_queries(lambda j: numpy_eng.search(data.q[j]), data.nq,
                                         cap_s=args.cap, min_q=args.min_q)
                run.add("numpy", False, numpy_eng.params, none,
                        recall10=mean_recall(truth, none, found), **t, build_s=0.0,
                        size_mb=numpy_eng.info["size_mb"], mem_mb=numpy_eng.info["mem_mb"],
                        strategy="full scan", chosen=True)
                run.phase("unfiltered head-to-head", t0)

                # ---- filtered, ours (memory, exact) and baselines
                t0 = time.perf_counter()
                log("memory backend, filtered")
                measure_backend(run, "memory", mem, params=mem_params, all_cases=all_cases,
                                truth=truth, row_of=row_of, base=mem_base, skip=("none",))
                log("exact backend")
                measure_backend(run, "exact", exact, params="brute force f32 + filter mirror",
                                all_cases=all_cases, truth=truth, row_of=row_of, base=exact_base)
                exact.close()
                run.phase("ours: memory + exact, filtered", t0)
                t0 = time.perf_counter()
                for eng in engines:
                    ef = picks[eng.name]["ef95"][0] if eng.name in picks else 0
                    baseline_filtered(run, eng, ef, all_cases, truth)
                    eng.index = None
                run.phase("baselines: filtered", t0)

                # ---- libsql
                if not args.skip_libsql:
                    t0 = time.perf_counter()
                    log(f"libsql tuned index at n={data.n}: building (CREATE INDEX on the table)")
                    lidx, linfo = libsql_index(db, model, None, ("topic", "lang"))
                    log(f"  {linfo}")
                    lparams = (f"DiskANN {','.join(linfo['options'])}, "
                                f"search_l={linfo['search_l']}, expression indexes on "
                                f"metadata {'/'.join(linfo['metadata_indexes'])}")
                    lbase = {k: linfo[k] for k in ("build_s", "size_mb", "size_method",
                                                   "db_file_mb", "metadata_index_s")}
                    measure_backend(run, "libsql", lidx, params=lparams, all_cases=all_cases,
                                    truth=truth, row_of=row_of, base=lbase)
                    lidx.close()
                    run.phase("libsql: tuned build + search", t0)
                    t0 = time.perf_counter()
                    libsql_default_compare(run, tmp)
                    run.phase("libsql: default vs tuned at 10k", t0)
                mem.close()

            # ---- hybrid and embedder (torch loads here, after every ANN measurement)
            if not args.synthetic:  # both need the real passages
                t0 = time.perf_counter()
                hybrid(run, db, idx_root)
                run.phase("hybrid", t0)
                t0 = time.perf_counter()
                embedder_throughput(run)
                run.phase("embedder throughput", t0)
        finally:
            db.close()
    run.notes["total_s"] = round(time.perf_counter() - started, 1)
    run.loads.append(("end", os.getloadavg()))
    log(f"total {run.notes['total_s']} s")
    from vector_report import report

    table = report(run)
    if args.no_write:
        print(table)
    else:
        write_results("vector.synthetic" if args.synthetic else "vector", run.rows, table)


if __name__ == "__main__":
    main()
