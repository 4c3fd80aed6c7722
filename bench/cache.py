"""Cache benchmark: every cache level and cached use case against its uncached baseline, one run.

What is measured (p50/p99 of single operations; paths of one group are timed in interleaved
rounds, so a slow phase of the machine hits baseline and cached path alike):

* Redis level, a ~1.3 KB prompt row as JSON: raw redis-py ``GET`` + ``json.loads`` (and ``GET``
  alone) against our L2 hit (``get_or_load`` with L1 off) and our L1 hit.
* Prompt reads: ``get_prompt`` / ``list_prompts`` uncached in embedded and remote (sqld) mode,
  through the cache as the policy wires them (remote: L1 hit, and L2 hit with L1 off; embedded:
  the policy bypasses), and in embedded mode what caching them would cost (L1 / L2 hit).
* Query embeddings: computed by the real all-MiniLM-L6-v2 against a hit in the in-process LRU,
  in our cache's L1 and in Redis (another process's L1 is empty).
* Search (hybrid and vector, k=10, the same query repeated) over 10,000 real passages with their
  MiniLM vectors (``bench/.cache``; 2,000 embedded here when it is missing), uncached (today's
  path: the query vector comes from the in-process LRU) against cached, with the key the policy
  uses in that mode and with the other key, in embedded and in remote mode.

Targets: L2 hit <= 1.2x raw redis-py GET; L1 hit <= 5 µs; remote cached read <= 0.15x uncached;
cached search <= 0.05x uncached; in embedded mode no cached path the policy uses slower than the
uncached one. Writes bench/results/cache.json (rows: path, mode, ours, p50_us, p99_us, ratio_to,
ratio) and bench/results/cache.md. Starts its own redis-server and sqld on free ports.

    .venv/bin/python bench/cache.py            # ~3-5 minutes
    .venv/bin/python bench/cache.py --quick    # a smoke run, results not written
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autoforge_data.cache import CacheAside, LayeredCache, make_cache
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.services import caching
from autoforge_data.services import prompts as svc
from autoforge_data.services.search import CacheAsideEmbedder, SearchContext, search
from autoforge_data.settings import Settings
from autoforge_data.vector.embedders import CachedEmbedder, MiniLMEmbedder, content_hash
from autoforge_data.vector.store import VectorStore, active_model
from common import RESULTS, write_results
from servers import Redis, Sqld, start_redis, start_sqld

CORPUS = Path(__file__).resolve().parent / ".cache"
QUERY = "how do I parse command line arguments into options"
K = 10
REDIS_REPS = 5
Fn = Callable[[int], object]


# --- timing -----------------------------------------------------------------------------------


def measure(paths: dict[str, Fn], n: int, rounds: int = 6, warm: int = 50) -> dict[str, dict]:
    """p50/p99 (µs) of each path's single ops; rounds alternate the paths' order."""
    clock = time.perf_counter_ns
    for fn in paths.values():
        for i in range(warm):
            fn(i)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn, out = paths[name], samples[name]
            for i in range(n):
                t0 = clock()
                fn(i)
                out.append((clock() - t0) / 1000)
    stats = {}
    for name, s in samples.items():
        s.sort()
        stats[name] = {"p50_us": s[len(s) // 2], "p99_us": s[int(len(s) * 0.99)]}
    return stats


class Rows:
    """The result rows, in the JSON schema of the issue."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self, path: str, mode: str, ours: bool, st: dict[str, float], base: str | None = None
    ) -> dict[str, Any]:
        ratio_to = base or path
        row = {
            "path": path,
            "mode": mode,
            "ours": ours,
            "p50_us": round(st["p50_us"], 2),
            "p99_us": round(st["p99_us"], 2),
            "ratio_to": ratio_to,
            "ratio": 1.0,
        }
        if base is not None:
            ref = self.get(base, mode)
            row["ratio"] = round(st["p50_us"] / ref["p50_us"], 4)
        self.rows.append(row)
        return row

    def get(self, path: str, mode: str) -> dict[str, Any]:
        for row in self.rows:
            if row["path"] == path and row["mode"] == mode:
                return row
        raise KeyError((path, mode))


# --- setup ------------------------------------------------------------------------------------


def prompt_text(i: int) -> tuple[str, str]:
    """A title and ~1 KB of content: with ids, timestamps and metadata a ~1.3 KB JSON row."""
    body = (
        "You are a support analyst. Read the ticket below and write a two-sentence summary, "
        "then list the product areas it touches, the customer's sentiment and an urgency from "
        "1 to 5 with one line of justification. Quote the customer where it helps, never invent "
        "facts, keep a neutral tone, and end with the next step the support team should take. "
    )
    content = f"[{i}] " + (body * 3)[:1010]
    return f"Support ticket summariser, variant {i} (English, neutral tone)", content


def load_corpus(n: int, minilm: MiniLMEmbedder) -> tuple[list[str], list[str], np.ndarray]:
    """(titles, texts, vectors) of n passages: the cached real corpus, or generated + embedded."""
    emb = CORPUS / "corpus_emb.npy"
    if emb.exists() and (CORPUS / "corpus.jsonl").exists():
        vecs = np.load(emb, mmap_mode="r")
        n = min(n, len(vecs))
        titles, texts = [], []
        with (CORPUS / "corpus.jsonl").open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= n:
                    break
                row = json.loads(line)
                titles.append(row["source"][:200])
                texts.append(row["text"])
        return titles, texts, np.ascontiguousarray(vecs[:n], dtype=np.float32)
    n = min(n, 2000)
    print(f"bench/.cache missing: embedding {n} generated passages with MiniLM")
    words = ["parse", "sort", "list", "file", "path", "option", "argument"]
    words += ["string", "number", "date", "time", "json", "http", "socket"]
    texts = [
        f"How to {words[i % 14]} a {words[(i * 7) % 14]} with the {words[(i * 3) % 14]} "
        f"module: example {i}, step by step, with the edge cases and a short test."
        for i in range(n)
    ]
    return [f"passage {i}" for i in range(n)], texts, minilm.embed(texts)


def fill(db: Database, n_prompts: int, titles: list[str], texts: list[str], vecs: Any) -> dict:
    """Prompts for the point reads (one owner) and the search corpus with its vectors."""
    owner = svc.create_user(db, "bench-reads@example.com", "reads").id
    svc.import_prompts(db, owner, [prompt_text(i) for i in range(n_prompts)])
    ids = [p.id for p in svc.list_prompts(db, owner, limit=200).items]
    searcher = svc.create_user(db, "bench-search@example.com", "search").id
    svc.import_prompts(db, searcher, list(zip(titles, texts, strict=True)), status="active")
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            "SELECT id, title || char(10) || content FROM prompts WHERE owner_id = ?",
            (searcher,),
        )
    by_text = {t: i for i, t in enumerate(texts)}
    model = active_model(db)
    store = VectorStore(model)
    batch: list[tuple[str, int, str, np.ndarray]] = []
    for pid, text in rows:
        body = str(text).split("\n", 1)[1]
        batch.append((str(pid), 1, content_hash(str(text), model.name), vecs[by_text[body]]))
    for start in range(0, len(batch), 2000):
        with UnitOfWork(db, write=True) as uow:
            store.upsert_many(uow, batch[start : start + 2000])
            uow.commit()
    return {"owner": owner, "ids": ids}


@contextlib.contextmanager
def servers(tmp: Path) -> Iterator[tuple[Redis, Sqld]]:
    """A redis-server and a sqld of our own, stopped however the run ends."""
    redis_server = start_redis(tmp)
    try:
        # The index loader reads 10,000 vectors per statement (vector/store.py iter_all): ~21 MB
        # as Hrana JSON, over sqld's default 10 MB response limit. Raised here so that the run
        # measures caching; the loader's chunk size is reported as a bug of its own.
        sqld = start_sqld(
            tmp, extra=["--max-response-size", "64MB", "--max-total-response-size", "128MB"]
        )
        try:
            yield redis_server, sqld
        finally:
            sqld.stop()
    finally:
        redis_server.stop()


def two_level(tmp: Path, schema: str, **kw: Any) -> CacheAside:
    """make_cache (L1 + Redis), waiting until its invalidation listener is subscribed."""
    cache = make_cache(Settings.load("prod", base_dir=tmp, **kw), schema=schema)
    deadline = time.monotonic() + 10
    backend = cache.backend
    while isinstance(backend, LayeredCache) and not backend.listener.healthy:
        if time.monotonic() > deadline:
            raise RuntimeError("cache listener did not subscribe")
        time.sleep(0.01)
    return cache


# --- the groups -------------------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    """What every group needs: the rows, the two caches (L1 + L2, and L2 alone), the model."""

    rows: Rows
    cache: CacheAside
    l2: CacheAside
    minilm: MiniLMEmbedder
    tmp: Path
    n: int  # ops per round for the microsecond paths
    l2_ratios: list[float] = dataclasses.field(default_factory=list)  # per Redis repetition


def redis_level(env: Env, url: str, row: list) -> None:
    """Raw redis-py GET vs our L2 hit vs our L1 hit, the same ~1.3 KB value."""
    import redis

    rows, cache, l2, n = env.rows, env.cache, env.l2, env.n

    raw = redis.Redis.from_url(url)
    payload = json.dumps(row)
    raw.set("bench:raw", payload)

    def loader() -> list:
        return row

    cache.get_or_load("prompt", ["bench-row"], loader)
    l2.get_or_load("prompt", ["bench-row"], loader)
    paths: dict[str, Fn] = {
        "raw_json": lambda i: json.loads(raw.get("bench:raw")),  # type: ignore[arg-type]
        "raw": lambda i: raw.get("bench:raw"),
        "l2": lambda i: l2.get_or_load("prompt", ["bench-row"], loader),
        "l1": lambda i: cache.get_or_load("prompt", ["bench-row"], loader),
    }
    # Loopback latency moves between repetitions on a 2-CPU machine (where the scheduler puts
    # the client and the server): five repetitions; the rows are the one with the median L2/raw
    # ratio (one real measurement, all paths interleaved), the others are listed in the notes.
    reps = [measure(paths, max(n // 2, 20), rounds=4) for _ in range(REDIS_REPS)]
    env.l2_ratios = [r["l2"]["p50_us"] / r["raw_json"]["p50_us"] for r in reps]
    st = reps[env.l2_ratios.index(statistics.median_low(env.l2_ratios))]
    base = "raw redis-py GET + json.loads (1.3 KB prompt row)"
    rows.add(base, "remote", False, st["raw_json"])
    rows.add("raw redis-py GET alone (bytes, no decode)", "remote", False, st["raw"], base)
    rows.add("our L2 hit (get_or_load, L1 off)", "remote", True, st["l2"], base)
    rows.add("our L1 hit (get_or_load)", "remote", True, st["l1"], base)
    raw.close()


def prompt_reads(env: Env, mode: str, db: Database, data: dict, n: int) -> None:
    """get_prompt and list_prompts: uncached, as wired, and (embedded) cached anyway."""
    rows, cache, l2 = env.rows, env.cache, env.l2
    ids, owner = data["ids"], data["owner"]
    codec = caching.prompt_codec()

    def forced(c: CacheAside) -> Fn:
        def fn(i: int) -> object:
            pid = ids[i % len(ids)]
            return c.get_or_load(
                caching.PROMPT, [pid], lambda: svc.get_prompt(db, pid), codec=codec
            )

        return fn

    paths: dict[str, Fn] = {
        "uncached": lambda i: svc.get_prompt(db, ids[i % len(ids)]),
        "uncached_again": lambda i: svc.get_prompt(db, ids[i % len(ids)]),
        "wired": lambda i: svc.get_prompt(db, ids[i % len(ids)], cache=cache),
        "wired_l2": lambda i: svc.get_prompt(db, ids[i % len(ids)], cache=l2),
    }
    if mode == "embedded":
        paths = {k: v for k, v in paths.items() if k != "wired_l2"}
        paths["forced_l1"], paths["forced_l2"] = forced(cache), forced(l2)
    st = measure(paths, n, warm=len(ids) + 10)  # every id cached first: p99 is of hits
    base = "get_prompt, uncached"
    rows.add(base, mode, True, st["uncached"])
    rows.add("get_prompt, uncached (A/A repeat: the noise)", mode, True, st["uncached_again"], base)
    if mode == "remote":
        rows.add("get_prompt, cached as wired (L1 hit)", mode, True, st["wired"], base)
        rows.add("get_prompt, cached as wired (L2 hit, L1 off)", mode, True, st["wired_l2"], base)
    else:
        rows.add("get_prompt, with cache as wired (policy: bypass)", mode, True, st["wired"], base)
        rows.add("get_prompt, if cached anyway (L1 hit)", mode, True, st["forced_l1"], base)
        rows.add("get_prompt, if cached anyway (L2 hit)", mode, True, st["forced_l2"], base)

    lists: dict[str, Fn] = {
        "uncached": lambda i: svc.list_prompts(db, owner),
        "uncached_again": lambda i: svc.list_prompts(db, owner),
        "wired": lambda i: svc.list_prompts(db, owner, cache=cache),
    }
    if mode == "remote":
        lists["wired_l2"] = lambda i: svc.list_prompts(db, owner, cache=l2)
    st = measure(lists, max(n // 2, 20))
    base = "list_prompts (20 newest), uncached"
    rows.add(base, mode, True, st["uncached"])
    rows.add(
        "list_prompts, uncached (A/A repeat: the noise)", mode, True, st["uncached_again"], base
    )
    if mode == "remote":
        rows.add("list_prompts, cached as wired (L1 hits)", mode, True, st["wired"], base)
        rows.add(
            "list_prompts, cached as wired (L2 hits, L1 off)", mode, True, st["wired_l2"], base
        )
    else:
        rows.add(
            "list_prompts, with cache as wired (policy: bypass)", mode, True, st["wired"], base
        )


def embeddings(env: Env) -> None:
    """A query's vector computed by MiniLM vs a hit at each level."""
    rows, minilm, cache, l2, n = env.rows, env.minilm, env.cache, env.l2, env.n
    lru = CachedEmbedder(minilm)
    l1 = CacheAsideEmbedder(minilm, cache)
    shared = CacheAsideEmbedder(minilm, l2)
    for e in (lru, l1, shared):
        e.embed([QUERY])
    compute = measure({"c": lambda i: minilm.embed([QUERY])}, max(n // 40, 10), rounds=4, warm=5)
    hits = measure(
        {
            "lru": lambda i: lru.embed([QUERY]),
            "l1": lambda i: l1.embed([QUERY]),
            "l2": lambda i: shared.embed([QUERY]),
        },
        n,
    )
    base = "query embedding computed (MiniLM, CPU)"
    rows.add(base, "embedded", True, compute["c"])
    rows.add("query embedding hit, in-process LRU", "embedded", True, hits["lru"], base)
    rows.add("query embedding hit, cache L1", "embedded", True, hits["l1"], base)
    rows.add("query embedding hit, cache L2 (Redis)", "embedded", True, hits["l2"], base)


def searches(env: Env, mode: str, db: Database, n: int) -> None:
    """The same query repeated: uncached vs cached with the policy's key and with the other."""
    rows, minilm, cache = env.rows, env.minilm, env.cache
    plain = SearchContext.open(db, data_dir=env.tmp / f"idx-{mode}", embedder=minilm)
    try:
        wired = SearchContext(db, plain.model, plain.index, minilm, cache=cache)
        assert wired.policy is not None
        key = wired.policy.search_key
        other_key: caching.SearchKey = "generation" if key == "data_version" else "data_version"
        alt = SearchContext(db, plain.model, plain.index, minilm, cache=cache)
        alt.policy = dataclasses.replace(wired.policy, search_key=other_key)
        for smode in ("hybrid", "vector"):
            for ctx in (plain, wired, alt):
                assert search(ctx, QUERY, k=K, mode=smode) == search(plain, QUERY, k=K, mode=smode)
            st = measure(
                {
                    "plain": lambda i, m=smode: search(plain, QUERY, k=K, mode=m),
                    "wired": lambda i, m=smode: search(wired, QUERY, k=K, mode=m),
                    "alt": lambda i, m=smode: search(alt, QUERY, k=K, mode=m),
                },
                n,
                warm=10,
            )
            base = f"search {smode} k={K}, uncached (same query; its vector from the LRU)"
            rows.add(base, mode, True, st["plain"])
            rows.add(
                f"search {smode} k={K}, cached as wired ({key} key)", mode, True, st["wired"], base
            )
            rows.add(
                f"search {smode} k={K}, cached with the {other_key} key (not wired here)",
                mode,
                True,
                st["alt"],
                base,
            )
    finally:
        plain.close()


def replica_probe(tmp: Path, sqld: Sqld, pid: str, n: int) -> dict[str, dict]:
    """A local replica read and its data version read (for the policy; not a JSON row)."""
    settings = Settings.load(
        "prod", base_dir=tmp / "replica", database_url=str(tmp / "replica" / "r.db"),
        sync_url=sqld.url,
    )  # fmt: skip
    with Database(settings) as db:
        db.replica.sync()
        return measure(
            {
                "get_prompt": lambda i: svc.get_prompt(db, pid),
                "data_version": lambda i: caching.data_version(db),
            },
            n,
        )


# --- report -----------------------------------------------------------------------------------


def verdicts(rows: Rows) -> list[tuple[str, bool, str]]:
    """(target, met, evidence) for each of the issue's targets."""
    out = []
    base = "raw redis-py GET + json.loads (1.3 KB prompt row)"
    l2 = rows.get("our L2 hit (get_or_load, L1 off)", "remote")
    alone = rows.get("raw redis-py GET alone (bytes, no decode)", "remote")
    vs_get = l2["p50_us"] / alone["p50_us"]
    out.append(
        (
            "L2 hit <= 1.2x raw redis-py GET",
            l2["ratio"] <= 1.2,
            f"{l2['p50_us']} µs = {l2['ratio']:.2f}x `{base}`; {vs_get:.2f}x a bare GET "
            "that decodes nothing (our hit decodes the envelope and the value)",
        )
    )
    l1 = rows.get("our L1 hit (get_or_load)", "remote")
    out.append(("L1 hit <= 5 µs", l1["p50_us"] <= 5.0, f"p50 {l1['p50_us']} µs"))
    reads = [
        x
        for x in rows.rows
        if x["mode"] == "remote"
        and x["path"].split(",")[0] in ("get_prompt", "list_prompts")
        and "cached as wired" in x["path"]
    ]
    out.append(
        (
            "remote-mode cached read <= 0.15x uncached",
            all(x["ratio"] <= 0.15 for x in reads),
            "; ".join(f"{x['path']}: {x['ratio']:.4f}x" for x in reads),
        )
    )
    search_rows = [x for x in rows.rows if x["path"].endswith("key)") and "as wired" in x["path"]]
    worst = max(search_rows, key=lambda x: x["ratio"])
    out.append(
        (
            "cached search (same query) <= 0.05x uncached",
            all(x["ratio"] <= 0.05 for x in search_rows),
            ", ".join(f"{x['mode']} {x['path'].split()[1]} {x['ratio']:.4f}x" for x in search_rows)
            + f" (worst {worst['ratio']:.4f}x)",
        )
    )
    emb = [x for x in rows.rows if x["mode"] == "embedded"]
    noise = max(abs(x["ratio"] - 1.0) for x in emb if "A/A repeat" in x["path"])
    tolerance = max(noise, 0.02)
    wired = [
        x
        for x in emb
        if x["path"] != x["ratio_to"]
        and ("as wired" in x["path"] or x["path"].startswith("query embedding hit"))
    ]
    slower = [x for x in wired if x["ratio"] > 1.0 + tolerance]
    out.append(
        (
            "embedded mode: no cached path the policy uses slower than uncached",
            not slower,
            f"{len(wired)} paths; worst {max(x['ratio'] for x in wired):.3f}x "
            f"(slower = ratio above 1 + max(A/A noise {noise:.3f}, 0.02))"
            + (f"; slower: {', '.join(x['path'] for x in slower)}" if slower else ""),
        )
    )
    return out


def markdown(rows: Rows, extra: dict[str, Any]) -> str:
    """The table, the verdicts and what the policy took from them."""
    lines = [
        "| path | mode | ours | p50 µs | p99 µs | ratio | to |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in rows.rows:
        to = "—" if x["ratio_to"] == x["path"] else x["ratio_to"]
        lines.append(
            f"| {x['path']} | {x['mode']} | {'yes' if x['ours'] else 'no'} | {x['p50_us']:,} "
            f"| {x['p99_us']:,} | {x['ratio']} | {to} |"
        )
    lines += ["", "## Targets", ""]
    for target, ok, why in verdicts(rows):
        lines.append(f"- **{target}: {'met' if ok else 'NOT met'}** — {why}")
    ratios = extra["l2_ratios"]
    raw_p50 = rows.get("raw redis-py GET + json.loads (1.3 KB prompt row)", "remote")["p50_us"]
    over = rows.get("our L2 hit (get_or_load, L1 off)", "remote")["p50_us"] - raw_p50
    spread = (
        "they straddle the 1.2x bound: borderline, not a reliable pass"
        if min(ratios) <= 1.2 < max(ratios)
        else ("all within the bound" if max(ratios) <= 1.2 else "all above the bound")
    )
    lines.append(
        f"- The Redis rows are the median one of {len(ratios)} interleaved repetitions; L2/raw "
        f"per repetition: {', '.join(f'{r:.3f}' for r in ratios)} ({spread}). Our L2 hit adds "
        f"{over:.1f} µs here to a raw GET + json.loads of {raw_p50:.1f} µs (the breaker and pool "
        "guard, the envelope check, the key, the metrics, the two-level lookup: measured one by "
        "one, no single part to cut); loopback latency on this 2-CPU machine moves between runs "
        "(30-75 µs for the raw GET), and the ratio with it."
    )
    rep = extra["replica"]
    lines += [
        "",
        "## What the policy took from this run",
        "",
        f"- Embedded: a prompt read costs {rows.get('get_prompt, uncached', 'embedded')['p50_us']}"
        f" µs; an L2 hit {rows.get('get_prompt, if cached anyway (L2 hit)', 'embedded')['ratio']}"
        "x that: prompt reads bypass the cache. (An L1 hit is faster, but an L1 miss goes to "
        "Redis, and the rule is that no cached path may be slower.)",
        f"- Replica (not a JSON row, the schema has two modes): a local replica read "
        f"{rep['get_prompt']['p50_us']:.1f} µs p50, its data version "
        f"{rep['data_version']['p50_us']:.1f} µs: prompt reads bypass the cache there too "
        "(and a lagging replica must not refill a shared cache); search results are keyed by "
        "the replica's data version.",
        f"- Remote: a read costs {rows.get('get_prompt, uncached', 'remote')['p50_us']:,} µs: "
        "prompt by id and a user's list are cached (with Redis). Search results are keyed by the "
        "generation: the data version would cost a round trip per search (see the "
        "`data_version key` rows).",
        f"- Row sizes: the prompt row is {extra['row_bytes']} bytes of JSON; search corpus "
        f"{extra['corpus']:,} passages, k={K}, query {QUERY!r}.",
        f"- redis-py {extra['redis_py']} (hiredis {extra['hiredis']}), {extra['redis_server']}, "
        f"sqld on loopback, {os.cpu_count()} CPUs; other load: {extra['load']}.",
    ]
    return "\n".join(lines)


def run(env: Env, redis_url: str, emb: Database, rem: Database, extra: dict[str, Any]) -> None:
    """Every group, in one run."""
    titles, texts, vecs = load_corpus(extra["corpus"], env.minilm)
    extra["corpus"] = len(texts)
    data = {}
    for name, db in (("embedded", emb), ("remote", rem)):
        migrate.upgrade(db)
        t0 = time.perf_counter()
        data[name] = fill(db, 200, titles, texts, vecs)
        print(f"{name}: filled in {time.perf_counter() - t0:.1f} s")
    row = caching.prompt_codec().dump(svc.get_prompt(rem, data["remote"]["ids"][0]))
    extra["row_bytes"] = len(json.dumps(row))
    extra["pid"] = data["remote"]["ids"][0]
    redis_level(env, redis_url, row)
    extra["l2_ratios"] = env.l2_ratios
    prompt_reads(env, "embedded", emb, data["embedded"], env.n)
    prompt_reads(env, "remote", rem, data["remote"], max(env.n // 7, 20))
    print("redis level and prompt reads done")
    embeddings(env)
    print("embeddings done")
    searches(env, "embedded", emb, max(env.n // 5, 20))
    searches(env, "remote", rem, max(env.n // 20, 10))
    print("searches done")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts; write nothing")
    ap.add_argument("--corpus", type=int, default=10_000, help="search corpus passages")
    args = ap.parse_args()

    import hiredis
    import redis

    tmp = Path(tempfile.mkdtemp(prefix="afdb-bench-cache-"))
    extra: dict[str, Any] = {
        "redis_py": redis.__version__,
        "hiredis": hiredis.__version__,
        "load": f"load average {os.getloadavg()[0]:.2f} at start",
        "corpus": 2000 if args.quick else args.corpus,
    }
    rows = Rows()
    try:
        with servers(tmp) as (redis_server, sqld):
            version = subprocess.run(
                [shutil.which("redis-server") or "redis-server", "--version"],
                capture_output=True,
                text=True,
                check=True,
            )
            extra["redis_server"] = " ".join(version.stdout.split()[:3])
            schema = f"bench{os.getpid()}"
            emb_settings = Settings.load("prod", base_dir=tmp / "emb", data_dir=tmp / "emb" / "d")
            rem_settings = Settings.load("prod", base_dir=tmp / "rem", database_url=sqld.url)
            cache = two_level(tmp, schema, redis_url=redis_server.url)
            l2 = two_level(tmp, schema, redis_url=redis_server.url, cache_l1_entries=0)
            env = Env(
                rows, cache, l2, MiniLMEmbedder(batch_size=64), tmp, 200 if args.quick else 2000
            )
            try:
                with Database(emb_settings) as emb, Database(rem_settings) as rem:
                    run(env, redis_server.url, emb, rem, extra)
                extra["replica"] = replica_probe(tmp, sqld, extra["pid"], env.n)
            finally:
                cache.close()
                l2.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = markdown(rows, extra)
    if args.quick:
        print(text)
        return
    write_results("cache", rows.rows, text)
    print(f"wrote {RESULTS / 'cache.json'} and cache.md ({platform.python_version()})")


if __name__ == "__main__":
    main()
