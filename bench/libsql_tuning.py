"""Tuning libSQL's native vector index (DiskANN): default options against candidate options.

For each option set: build time (rows inserted with the index present, raw float32 blobs, in
transactions of 1,000 rows), on-disk size (index shadow tables from ``dbstat``, and the whole
file), single-thread QPS of ``vector_top_k(..., 10)`` and recall@10 against exact numpy search, on
the benchmark's real MiniLM vectors (``bench/.cache/corpus_emb.npy``, 384-d, normalized).

``search_l`` does not take part in building the graph (inserts use ``insert_l``); it is one
field of the index's parameter record in ``libsql_vector_meta_shadow``. The sweep therefore
builds each (compress_neighbors, max_neighbors) graph once and measures search_l 50/100/200 on
that graph by rewriting the field (checked: ``vector_top_k`` then returns at most that many
rows; and the sweep row "float8 mn=32 L=100 in DDL" builds the same options with search_l=100
in the DDL, to compare with the rewritten row).

Phases (results merged into ``bench/results/libsql_tuning.json`` and ``.md``):

    .venv/bin/python bench/libsql_tuning.py sweep --n 10000      # ~10 min on 2 cores
    .venv/bin/python bench/libsql_tuning.py full --n 50000       # 4 option sets, ~20 min
    .venv/bin/python bench/libsql_tuning.py dim1536 --n 2000     # 1,536-d (projected vectors)
    .venv/bin/python bench/libsql_tuning.py planner --n 50000    # LibsqlIndex, filtered, ~8 min
    .venv/bin/python bench/libsql_tuning.py report               # re-render the markdown

1,536-d rows use the real 384-d vectors mapped through a fixed random Gaussian 384→1536
projection (then normalized): no 1,536-d model runs offline here; cosine geometry is roughly
preserved, so build time and size are representative, recall only indicative.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "src"))

from autoforge_data.vector.libsql_index import (  # noqa: E402
    DEFAULT_SEARCH_L,
    options_for,
)

BATCH = 1_000
META_SEARCH_L = 9  # tag of search_l in libsql_vector_meta_shadow's parameter record

SWEEP = [
    # (label, options)  — options other than metric=cosine
    ("default", ()),
    ("float8", ("compress_neighbors=float8",)),
    ("float8 mn=64", ("compress_neighbors=float8", "max_neighbors=64")),
    ("float8 mn=32", ("compress_neighbors=float8", "max_neighbors=32")),
    ("float8 mn=16", ("compress_neighbors=float8", "max_neighbors=16")),
    ("float1bit", ("compress_neighbors=float1bit",)),
    ("float1bit mn=64", ("compress_neighbors=float1bit", "max_neighbors=64")),
    ("float1bit mn=32", ("compress_neighbors=float1bit", "max_neighbors=32")),
    ("float8 mn=32 alpha=1.4", ("compress_neighbors=float8", "max_neighbors=32", "alpha=1.4")),
    # cross-check of the search_l rewrite: the same graph options with search_l in the DDL
    (
        "float8 mn=32 L=100 in DDL",
        ("compress_neighbors=float8", "max_neighbors=32", "search_l=100"),
    ),
]


# the 50k phase: the sweep's best trade-offs, and the defaults to compare with
FULL = ("float8 mn=32", "float8 mn=16", "float1bit mn=32", "default")
DIM1536 = [
    ("default", ()),
    ("float8 mn=32", ("compress_neighbors=float8", "max_neighbors=32")),
    ("float1bit mn=32", ("compress_neighbors=float1bit", "max_neighbors=32")),
]


def load(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n corpus vectors and 500 held-out queries (projected to ``dim`` if not 384)."""
    corpus = np.load(CACHE / "corpus_emb.npy", mmap_mode="r")[:n].astype(np.float32)
    queries = np.load(CACHE / "queries_emb.npy")[:500].astype(np.float32)
    if dim != corpus.shape[1]:
        proj = np.random.default_rng(1536).standard_normal((corpus.shape[1], dim))
        corpus = (corpus @ proj).astype(np.float32)
        queries = (queries @ proj).astype(np.float32)
        corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(corpus), np.ascontiguousarray(queries)


def exact_top10(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact cosine top-10 ids (1-based rowids) per query."""
    sims = queries @ corpus.T
    top = np.argpartition(-sims, 10, axis=1)[:, :10]
    return top + 1


def connect(path: Path) -> Any:
    import libsql_experimental

    conn = libsql_experimental.connect(str(path), isolation_level=None)
    for pragma in ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"):
        conn.execute(pragma).fetchall()
    return conn


def build(path: Path, corpus: np.ndarray, options: tuple[str, ...]) -> dict[str, Any]:
    """Create table and index, insert every vector in transactions of BATCH rows."""
    dim = corpus.shape[1]
    conn = connect(path)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, emb F32_BLOB({dim}) NOT NULL)")
    opts = ", ".join(f"'{o}'" for o in ("metric=cosine", *options))
    conn.execute(f"CREATE INDEX i ON t (libsql_vector_idx(emb, {opts}))")
    blobs = [v.astype("<f4").tobytes() for v in corpus]
    start = time.perf_counter()
    for lo in range(0, len(blobs), BATCH):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t (id, emb) VALUES (?, ?)",
            [(lo + j + 1, b) for j, b in enumerate(blobs[lo : lo + BATCH])],
        )
        conn.commit()
    build_s = time.perf_counter() - start
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    sizes = dict(
        conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat WHERE name IN ('i_shadow', 'i_shadow_idx', 't') "
            "GROUP BY name"
        ).fetchall()
    )
    meta = conn.execute(
        "SELECT metadata FROM libsql_vector_meta_shadow WHERE name = 'i'"
    ).fetchone()[0]
    conn.close()
    return {
        "build_s": round(build_s, 1),
        "index_mb": round((sizes.get("i_shadow", 0) + sizes.get("i_shadow_idx", 0)) / 1e6, 1),
        "table_mb": round(sizes.get("t", 0) / 1e6, 1),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "params": parse_meta(bytes(meta)),
    }


def parse_meta(blob: bytes) -> dict[int, int]:
    """The index parameter record: 9-byte (tag, little-endian u64) entries."""
    return {blob[i]: struct.unpack_from("<Q", blob, i + 1)[0] for i in range(0, len(blob) - 8, 9)}


def set_search_l(path: Path, search_l: int) -> None:
    """Rewrite the search_l field of the index's parameter record (graph untouched)."""
    conn = connect(path)
    blob = bytearray(
        conn.execute("SELECT metadata FROM libsql_vector_meta_shadow WHERE name = 'i'").fetchone()[
            0
        ]
    )
    for i in range(0, len(blob) - 8, 9):
        if blob[i] == META_SEARCH_L:
            struct.pack_into("<Q", blob, i + 1, search_l)
            break
    else:  # pragma: no cover - every index records search_l
        raise RuntimeError("search_l not found in the index parameters")
    conn.execute("BEGIN")
    conn.execute(
        "UPDATE libsql_vector_meta_shadow SET metadata = ? WHERE name = 'i'", (bytes(blob),)
    )
    conn.commit()
    conn.close()


def measure(path: Path, queries: np.ndarray, truth: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Recall@10 and single-thread QPS of vector_top_k(k), plus how many rows k=1000 returns."""
    conn = connect(path)
    qb = [q.astype("<f4").tobytes() for q in queries]
    sql = "SELECT id FROM vector_top_k('i', ?, ?)"
    for b in qb[:20]:  # warm the page cache
        conn.execute(sql, (b, k)).fetchall()
    hits = 0
    start = time.perf_counter()
    for j, b in enumerate(qb):
        ids = [r[0] for r in conn.execute(sql, (b, k)).fetchall()]
        hits += len(set(ids[:10]) & set(truth[j].tolist()))
    elapsed = time.perf_counter() - start
    cap = len(conn.execute(sql, (qb[0], 1000)).fetchall())
    conn.close()
    return {
        "recall10": round(hits / (10 * len(qb)), 4),
        "qps": round(len(qb) / elapsed, 1),
        "rows_at_k1000": cap,
    }


def run(
    phase: str,
    n: int,
    dim: int,
    configs: list[tuple[str, tuple[str, ...]]],
    search_ls: list[int | None],
) -> list[dict[str, Any]]:
    corpus, queries = load(n, dim)
    truth = exact_top10(corpus, queries)
    rows: list[dict[str, Any]] = []
    for label, options in configs:
        with tempfile.TemporaryDirectory(dir=ROOT / "bench" / ".cache") as tmp:
            path = Path(tmp) / "tune.db"
            print(f"[{phase}] n={n} dim={dim} {label}: building ...", flush=True)
            built = build(path, corpus, options)
            print(f"    {built}", flush=True)
            for sl in search_ls:
                if sl is not None:
                    set_search_l(path, sl)
                m = measure(path, queries, truth)
                if sl is not None and m["rows_at_k1000"] > sl + 10:
                    raise RuntimeError(f"search_l rewrite had no effect: {m}")
                row = {
                    "phase": phase,
                    "n": n,
                    "dim": dim,
                    "label": label,
                    "options": ",".join(("metric=cosine", *options)),
                    "search_l": sl if sl is not None else built["params"].get(META_SEARCH_L),
                    "search_l_rewritten": sl is not None,
                    "max_neighbors": built["params"].get(0x0A),
                    "build_s": built["build_s"],
                    "index_mb": built["index_mb"],
                    "file_mb": built["file_mb"],
                    "table_mb": built["table_mb"],
                    **m,
                }
                print(f"    search_l={row['search_l']}: {m}", flush=True)
                rows.append(row)
    return rows


def _planner_db(db: Any, corpus: np.ndarray, meta: list[dict[str, Any]]) -> np.ndarray:
    """Users, prompts with the corpus metadata, the index, then the vectors; returns nums."""
    from autoforge_data.db import migrate
    from autoforge_data.db.uow import UnitOfWork
    from autoforge_data.vector.libsql_index import ensure_index
    from autoforge_data.vector.store import VectorStore, get_model

    n = len(corpus)
    migrate.upgrade(db)
    owners = sorted({m["owner"] for m in meta})
    with UnitOfWork(db, write=True) as uow:
        uow.executemany(
            "INSERT INTO users (id, email, username) VALUES (?, ?, ?)",
            [(o, f"{o}@example.com", o) for o in owners],
        )
        uow.executemany(
            "INSERT INTO prompts (id, owner_id, title, content, status, metadata, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f"P{i:025d}",
                    m["owner"],
                    f"T{i}",
                    "x",
                    m["status"],
                    json.dumps({"topic": m["topic"], "lang": m["lang"]}),
                    m["created_iso"].replace("Z", ".000Z"),
                )
                for i, m in enumerate(meta)
            ],
        )
        uow.commit()
    model = get_model(db, "all-MiniLM-L6-v2")
    ensure_index(db, model)
    store = VectorStore(model)
    start = time.perf_counter()
    for lo in range(0, n, BATCH):
        with UnitOfWork(db, write=True) as uow:
            batch = [(f"P{i:025d}", 1, "h", corpus[i]) for i in range(lo, min(n, lo + BATCH))]
            store.upsert_many(uow, batch)
            uow.commit()
    print(f"[planner] n={n}: built via VectorStore in {time.perf_counter() - start:.1f} s")
    with UnitOfWork(db) as uow:
        by_id = dict(uow.fetchall("SELECT prompt_id, num FROM prompt_keys"))
    return np.array([by_id[f"P{i:025d}"] for i in range(n)], dtype=np.int64)


def _filters(meta: list[dict[str, Any]], owners: list[str], j: int) -> dict[float, Any]:
    """Query j's filter per selectivity, with the mask of the rows it allows."""
    from autoforge_data.vector.base import Filter

    topic, lang, owner = f"topic-{j % 10}", f"lang-{j % 100:02d}", owners[j % len(owners)]
    status = np.array([m["status"] == "active" for m in meta])
    topics = np.array([m["topic"] == topic for m in meta])
    return {
        1.0: (Filter(), np.ones(len(meta), dtype=bool)),
        0.5: (Filter(status=("active",)), status),
        0.1: (Filter(metadata={"topic": topic}), topics),
        0.05: (Filter(status=("active",), metadata={"topic": topic}), status & topics),
        0.01: (Filter(metadata={"lang": lang}), np.array([m["lang"] == lang for m in meta])),
        0.001: (Filter(owner_id=owner), np.array([m["owner"] == owner for m in meta])),
    }


def planner(n: int, nq: int = 200) -> list[dict[str, Any]]:
    """The LibsqlIndex planner on the project schema: recall@10 and QPS per selectivity.

    Prompts carry the corpus metadata (status 50%, topic 10%, lang 1%, owner 0.1%; status and
    topic together 5%); query j filters on value j mod (number of values), so every selectivity
    is averaged over values. Each filter is run three ways: the planner, always an exact scan
    of the subset, always ANN over-fetching search_l candidates.
    """
    from autoforge_data.db.engine import Database
    from autoforge_data.settings import Settings
    from autoforge_data.vector.libsql_index import LibsqlIndex
    from autoforge_data.vector.store import get_model

    corpus, queries = load(n, 384)
    queries = queries[:nq]
    with (CACHE / "corpus.jsonl").open() as f:
        meta = [json.loads(line)["metadata"] for line, _ in zip(f, range(n), strict=False)]
    owners = sorted({m["owner"] for m in meta})
    cases = [_filters(meta, owners, j) for j in range(nq)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        settings = Settings.load(
            "dev",
            base_dir=Path(tmp),
            data_dir=Path(tmp) / "data",
            db_driver="libsql",
            synchronous="NORMAL",
        )
        with Database(settings) as db:
            nums = _planner_db(db, corpus, meta)
            model = get_model(db, "all-MiniLM-L6-v2")
            ways = {
                "planner": LibsqlIndex(db, model, create=False),
                "always-exact": LibsqlIndex(db, model, create=False, strategy="exact"),
                "always-ann": LibsqlIndex(db, model, create=False, strategy="ann"),
            }
            for sel in (1.0, 0.5, 0.1, 0.05, 0.01, 0.001):
                truths = []
                for j, q in enumerate(queries):
                    mask = cases[j][sel][1]
                    order = np.argsort(-(corpus[mask] @ q))[:10]
                    truths.append(set(nums[mask][order].tolist()))
                for way, index in ways.items():
                    row = _measure_way(index, queries, [c[sel][0] for c in cases], truths)
                    row.update(phase="planner", n=n, dim=384, label=way, selectivity=sel)
                    print(f"    {row}", flush=True)
                    rows.append(row)
    return rows


def _measure_way(
    index: Any, queries: np.ndarray, flts: list[Any], truths: list[set[int]]
) -> dict[str, Any]:
    lat, rec, strategies = [], [], Counter[str]()
    for q, flt, truth in zip(queries, flts, truths, strict=True):
        t0 = time.perf_counter()
        hits = index.search(q, 10, flt)
        lat.append(time.perf_counter() - t0)
        rec.append(len(truth & set(hits.nums.tolist())) / max(1, len(truth)))
        strategies[hits.strategy] += 1
    return {
        "search_l": index.search_l,
        "options": ",".join(index.options),
        "recall10": round(float(np.mean(rec)), 4),
        "qps": round(len(lat) / sum(lat), 1),
        "p50_ms": round(float(np.median(lat)) * 1000, 2),
        "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 2),
        "strategies": dict(strategies),
    }


def merge(new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path = RESULTS / "libsql_tuning.json"
    old = json.loads(path.read_text()) if path.exists() else []
    key = ("phase", "n", "dim", "label", "search_l", "selectivity")
    seen = {tuple(r.get(k) for k in key) for r in new}
    return [r for r in old if tuple(r.get(k) for k in key) not in seen] + new


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# libSQL vector index tuning",
        "",
        "Inserted with the index present, raw float32 blobs, 1,000-row transactions, WAL, "
        "synchronous=NORMAL; 500 held-out queries, single thread, `vector_top_k(idx, q, 10)`; "
        "recall@10 against exact numpy cosine. `search_l*`: measured on the same graph with the "
        "parameter rewritten (search_l is not used while building). 2 shared cores: timings are "
        "±15%.",
        "",
        "| phase | n | dim | options | max_nb | search_l | build s | index MB | file MB | QPS "
        "| recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["phase"] == "planner":
            continue
        sl = f"{r['search_l']}{'*' if r['search_l_rewritten'] else ''}"
        lines.append(
            f"| {r['phase']} | {r['n']} | {r['dim']} | {r['label']} | {r['max_neighbors']} | {sl} "
            f"| {r['build_s']} | {r['index_mb']} | {r['file_mb']} | {r['qps']} | {r['recall10']} |"
        )
    plan = [r for r in rows if r["phase"] == "planner"]
    if plan:
        lines += [
            "",
            "## Filtered search through LibsqlIndex (project schema, k=10)",
            "",
            "200 held-out queries per row; 50% = status, 10% = metadata topic, 5% = status and "
            "topic, 1% = metadata lang, 0.1% = owner. The 50k run shared the 2 cores with "
            "another benchmark: compare the ways within a run (planner vs always-ann at 100% is "
            "the same path, 157 vs 209 QPS: that is the noise).",
            "",
            "| n | way | selectivity | recall@10 | QPS | p50 ms | p95 ms | strategies |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in plan:
            mix = ", ".join(f"{k} {v}" for k, v in sorted(r["strategies"].items()))
            lines.append(
                f"| {r['n']} | {r['label']} | {r['selectivity']} | {r['recall10']} | {r['qps']} "
                f"| {r['p50_ms']} | {r['p95_ms']} | {mix} |"
            )
    rest = [r for r in rows if r["phase"] != "planner"]
    ratios = _ratios(rest)
    if ratios:
        lines += ["", "## Chosen against default (same phase, n, dim)", "", *ratios]
    return "\n".join(lines) + "\n"


def _ratios(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for phase, n, dim in sorted({(r["phase"], r["n"], r["dim"]) for r in rows}):
        group = [r for r in rows if (r["phase"], r["n"], r["dim"]) == (phase, n, dim)]
        default = [r for r in group if r["label"] == "default" and not r["search_l_rewritten"]]
        if not default:
            continue
        d = default[0]
        for c in group:
            if c["label"] == "default":
                continue
            chosen = c["options"] == ",".join(("metric=cosine", *options_for(dim)))
            mark = " **(chosen)**" if chosen and not c["search_l_rewritten"] else ""
            out.append(
                f"- {phase} n={n} dim={dim} `{c['label']}` search_l={c['search_l']}{mark}: build "
                f"{d['build_s'] / c['build_s']:.1f}× faster, index "
                f"{d['index_mb'] / c['index_mb']:.1f}× smaller (file "
                f"{d['file_mb'] / c['file_mb']:.1f}×), QPS {c['qps'] / d['qps']:.1f}×, "
                f"recall@10 {c['recall10']} (default {d['recall10']})"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("sweep", "full", "dim1536", "planner", "report"))
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated sweep labels")
    args = parser.parse_args()
    if args.phase == "sweep":
        configs = SWEEP
        if args.only:
            configs = [c for c in SWEEP if c[0] in args.only.split(",")]
        rows = run("sweep", args.n or 10_000, 384, configs, [None, 100, 50])
    elif args.phase == "full":
        configs = [c for c in SWEEP if c[0] in FULL]
        if args.only:
            configs = [c for c in configs if c[0] in args.only.split(",")]
        rows = run("full", args.n or 50_000, 384, configs, [None, 100])
    elif args.phase == "planner":
        rows = planner(args.n or 10_000)
    elif args.phase == "report":  # re-render the markdown from the JSON
        rows = []
    else:
        rows = run("dim1536", args.n or 2_000, 1536, DIM1536, [None, 100])
    RESULTS.mkdir(parents=True, exist_ok=True)
    allrows = merge(rows)
    (RESULTS / "libsql_tuning.json").write_text(json.dumps(allrows, indent=2) + "\n")
    text = table(allrows)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / "libsql_tuning.md").write_text(
        text + f"\n_Measured {stamp}, search_l default {DEFAULT_SEARCH_L}._\n"
    )
    print(text)


if __name__ == "__main__":
    main()
