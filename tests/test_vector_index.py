"""The in-process vector indexes (``memory``, ``exact``) over real libSQL tables.

Every vector goes through the embeddings table (and so through the journal triggers) before an
index sees it. Recall is always measured against exact search, never against fixed lists. The
vectors are a slice of the benchmark's real MiniLM embeddings when ``bench/.cache`` has them,
otherwise a seeded Gaussian mixture shaped like sentence embeddings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.repositories import insert_prompts_bulk
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import InvalidInput, NotFound
from autoforge_data.ids import new_id
from autoforge_data.services import prompts as svc
from autoforge_data.vector.base import Filter, VectorIndex
from autoforge_data.vector.index import ExactIndex, IndexOptions, open_index
from autoforge_data.vector.memory import MemoryIndex
from autoforge_data.vector.mirror import allowed_nums, ms_to_iso
from autoforge_data.vector.store import (
    ModelRow,
    VectorStore,
    get_model,
    journal_head,
    register_model,
)
from conftest import settings_for, unique_email

MODEL = "all-MiniLM-L6-v2"
DIM = 384
N = 6_000  # above IndexOptions.small: the default planner has an ANN index to choose
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BENCH = Path(__file__).resolve().parent.parent / "bench" / ".cache"
# Exact scans cost "infinity": the planner always takes the ANN path (over-fetch, retries).
FORCE_ANN = IndexOptions(small=0, gather_ns=1e12, scan_ns=1e12)


def clustered(n: int, seed: int) -> np.ndarray:
    """n unit 384-d vectors from 60 clusters in a 64-d latent space (like text embeddings)."""
    base = np.random.default_rng(0)
    centers = base.standard_normal((60, 64))
    proj = base.standard_normal((64, DIM)) / 8.0
    rng = np.random.default_rng(seed)
    z = centers[rng.integers(0, 60, n)] + rng.standard_normal((n, 64))
    x = z @ proj + 0.3 * rng.standard_normal((n, DIM))
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def corpus(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Base and query vectors: real MiniLM embeddings if cached, else the Gaussian mixture."""
    base_file, query_file = BENCH / "corpus_emb.npy", BENCH / "queries_emb.npy"
    if base_file.is_file() and query_file.is_file():
        base = np.load(base_file, mmap_mode="r")[:n]
        return np.array(base, dtype=np.float32), np.load(query_file)[:queries].astype(np.float32)
    return clustered(n, 1), clustered(queries, 2)


@dataclass
class Seeded:
    """Prompts written for a test: ids and nums in vector order, and the owners."""

    ids: list[str]
    nums: list[int]
    owners: list[str]


def seed(
    db: Database,
    vectors: np.ndarray,
    *,
    statuses: list[str] | None = None,
    owner_of: list[int] | None = None,
    created_ms: list[int] | None = None,
    metadata: list[dict[str, Any]] | None = None,
    n_owners: int = 1,
) -> Seeded:
    """Write one prompt per vector (and the vector) through SQL, in one transaction."""
    n = len(vectors)
    owners = [svc.create_user(db, unique_email(), f"o{i}").id for i in range(n_owners)]
    statuses = statuses or ["active"] * n
    owner_of = owner_of or [0] * n
    ids = [new_id() for _ in range(n)]
    now = ms_to_iso(BASE_MS)
    groups: dict[tuple[int, str], list[tuple[str, str, str]]] = {}
    for i in range(n):
        groups.setdefault((owner_of[i], statuses[i]), []).append((ids[i], f"t{i}", f"c{i}"))
    with UnitOfWork(db, write=True) as uow:
        for (owner, status), items in groups.items():
            insert_prompts_bulk(uow, owners[owner], status, now, items)  # type: ignore[arg-type]
        if created_ms is not None or metadata is not None:
            uow.executemany(
                "UPDATE prompts SET created_at = ?, metadata = ? WHERE id = ?",
                [
                    (
                        ms_to_iso(created_ms[i] if created_ms else BASE_MS),
                        json.dumps(metadata[i] if metadata else {}),
                        ids[i],
                    )
                    for i in range(n)
                ],
            )
        store = VectorStore(get_model(db, MODEL))
        store.upsert_many(uow, [(ids[i], 1, "h", vectors[i]) for i in range(n)])
        uow.commit()
    return Seeded(ids, nums_of(db, ids), owners)


def nums_of(db: Database, ids: list[str]) -> list[int]:
    """The stable nums of prompt ids, in the same order."""
    with UnitOfWork(db) as uow:
        rows = dict(uow.fetchall("SELECT prompt_id, num FROM prompt_keys"))
    return [int(rows[i]) for i in ids]


def fresh_seed() -> int:
    """A seed no other test uses (the remote database is shared by the session)."""
    return int.from_bytes(os.urandom(4), "little")


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean |found ∩ truth| / |truth| (queries whose truth is empty count as 1)."""
    scores = [
        len(set(f.tolist()) & set(t.tolist())) / len(t) if len(t) else 1.0
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(scores))


def refresher(index: VectorIndex) -> Callable[[], None]:
    """An after-commit callback that refreshes ``index`` (the own-write path)."""

    def run() -> None:
        index.refresh()

    return run


def upsert(db: Database, pid: str, vector: np.ndarray, index: VectorIndex | None = None) -> None:
    """Store one vector; with ``index``, refresh it after the commit (own-write path)."""
    with UnitOfWork(db, write=True) as uow:
        VectorStore(get_model(db, MODEL)).upsert(uow, pid, 1, "h", vector)
        if index is not None:
            uow.after_commit(refresher(index))
        uow.commit()


def embedded_db(tmp: Path) -> Database:
    """A migrated embedded database in ``tmp``."""
    db = Database(settings_for("embedded", tmp))
    migrate.upgrade(db)
    return db


# --- recall ---------------------------------------------------------------------------------------


@dataclass
class RecallSetup:
    """One database with N vectors, the exact reference, and the queries."""

    db: Database
    model: ModelRow
    exact: ExactIndex
    queries: np.ndarray
    seeded: Seeded


@pytest.fixture(scope="module")
def rsetup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecallSetup]:
    """N vectors with random statuses, owners, created times and a rare metadata value."""
    db = embedded_db(tmp_path_factory.mktemp("recall"))
    base, queries = corpus(N, 100)
    rng = np.random.default_rng(5)
    seeded = seed(
        db,
        base,
        statuses=list(rng.choice(["active", "draft", "archived"], N, p=[0.5, 0.4, 0.1])),
        owner_of=[int(o) for o in rng.choice(3, N, p=[0.6, 0.3, 0.1])],
        created_ms=[BASE_MS + int(p) for p in rng.permutation(N)],
        metadata=[{"team": "b" if rng.random() < 0.01 else "a"} for _ in range(N)],
        n_owners=3,
    )
    model = get_model(db, MODEL)
    exact = ExactIndex(db, model).open()
    try:
        yield RecallSetup(db, model, exact, queries, seeded)
    finally:
        exact.close()
        db.close()


def by_created(selectivity: float) -> Filter:
    """A filter on created time that keeps ``selectivity`` of the N prompts (random ones)."""
    if selectivity >= 1.0:
        return Filter()
    return Filter(
        created_from=ms_to_iso(BASE_MS), created_to=ms_to_iso(BASE_MS + round(N * selectivity))
    )


def measure(index: VectorIndex, s: RecallSetup, flt: Filter, queries: int = 100) -> float:
    """recall@10 of ``index`` against exact search over the same filter."""
    found = [index.search(q, 10, flt).nums for q in s.queries[:queries]]
    truth = [s.exact.search(q, 10, flt).nums for q in s.queries[:queries]]
    return recall(found, truth)


@pytest.mark.parametrize("selectivity", [1.0, 0.5, 0.1, 0.01, 0.001])
def test_memory_recall_default_planner(rsetup: RecallSetup, selectivity: float) -> None:
    """recall@10 ≥ 0.95 against exact filtered search at every selectivity (planner's choice)."""
    index = MemoryIndex(rsetup.db, rsetup.model).open()
    try:
        assert index.stats()["ann"] is True
        assert measure(index, rsetup, by_created(selectivity)) >= 0.95
        strategies = index.stats()["strategies"]
        assert isinstance(strategies, dict)
        if selectivity == 1.0:
            assert set(strategies) == {"ann"}
        if selectivity <= 0.01:
            assert set(strategies) == {"exact-subset"}  # a few rows: scanning them is cheapest
    finally:
        index.close()


@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01, 0.001])
def test_memory_recall_forced_overfetch(rsetup: RecallSetup, selectivity: float) -> None:
    """The over-fetch path alone (sized to the selectivity, retry) keeps recall@10 ≥ 0.95."""
    opts = replace(FORCE_ANN, filter_min=2.0)  # never filter inside the graph
    index = MemoryIndex(rsetup.db, rsetup.model, options=opts).open()
    try:
        queries = 100 if selectivity >= 0.01 else 30
        assert measure(index, rsetup, by_created(selectivity), queries) >= 0.95
        strategies = index.stats()["strategies"]
        assert isinstance(strategies, dict)
        assert strategies.get("ann+overfetch", 0) >= queries // 2
        assert "ann+filter" not in strategies
    finally:
        index.close()


@pytest.mark.parametrize("selectivity", [0.5, 0.2, 0.1])
@pytest.mark.parametrize("kind", ["created", "random"])
def test_memory_recall_filtering_in_the_graph(
    rsetup: RecallSetup, selectivity: float, kind: str
) -> None:
    """Where the ANN wins, a filter is applied during the graph search (efSearch sized to the
    selectivity) and keeps recall@10 ≥ 0.95, for a created window (rows from a sorted column)
    and for rows scattered at random (a status mask). At N = 6,000 the allowed rows are fewer
    than ``filter_rows`` (2,000, sized for 50k): lowered here so the path runs at all, and at
    50% the default prefers the over-fetch (``filter_cost``): made neutral to test the path."""
    opts = replace(FORCE_ANN, filter_rows=0, filter_min=0.02, filter_cost=1.0)
    index = MemoryIndex(rsetup.db, rsetup.model, options=opts).open()
    try:
        if kind == "created":
            flt = by_created(selectivity)
        else:  # statuses are drawn at random (active 50%, draft 40%, archived 10%)
            half = ms_to_iso(BASE_MS + N // 2)
            flt = {
                0.5: Filter(status=("active",)),
                0.2: Filter(status=("archived", "draft"), created_from=half),
                0.1: Filter(status=("archived",)),
            }[selectivity]
        assert measure(index, rsetup, flt) >= 0.95
        strategies = index.stats()["strategies"]
        assert isinstance(strategies, dict)
        assert strategies.get("ann+filter", 0) >= 90, strategies
    finally:
        index.close()


def test_locality_order_moves_rows_not_results(rsetup: RecallSetup) -> None:
    """After a build the rows are reordered by k-means cluster (near vectors near in memory):
    the graph is the same, so every search returns the same prompts with the same scores as
    without the reordering, filtered or not, and every filter column moved with its row. (The
    codes shortlist breaks Hamming ties by row order, so it is off here: see
    test_codes_follow_their_rows for the codes.)"""
    graph_only = IndexOptions(use_codes=False)
    plain = MemoryIndex(rsetup.db, rsetup.model, options=replace(graph_only, locality_clusters=0))
    ordered = MemoryIndex(rsetup.db, rsetup.model, options=graph_only)
    try:
        plain.open()
        ordered.open()
        assert "locality_s" in ordered.stats() and "locality_s" not in plain.stats()
        moved = ordered._rows.nums[: ordered._rows.n]
        assert not np.array_equal(moved, plain._rows.nums[: plain._rows.n])
        assert sorted(moved.tolist()) == sorted(plain._rows.nums[: plain._rows.n].tolist())
        for flt in (Filter(), by_created(0.5), Filter(status=("archived",)),
                    Filter(metadata={"team": "b"})):
            for q in rsetup.queries[:40]:
                a, b = plain.search(q, 10, flt), ordered.search(q, 10, flt)
                assert a.nums.tolist() == b.nums.tolist()
                assert np.allclose(a.scores, b.scores, atol=1e-6)
                assert a.strategy == b.strategy
    finally:
        plain.close()
        ordered.close()


def test_ann_work_picks_the_filtered_graph_search_where_it_is_cheaper(
    rsetup: RecallSetup,
) -> None:
    """The default rule (calibrated on 50k real vectors) at this index's size: unfiltered and
    50% over-fetch (an in-graph search walks the disallowed rows too), 30-5% filter in the graph
    with efSearch growing as selectivity^-0.7, and below 5% never in the graph."""
    index = MemoryIndex(rsetup.db, rsetup.model, options=replace(IndexOptions(), filter_rows=0))
    index.open()
    try:
        n = index._rows.n
        sels = (1.0, 0.5, 0.3, 0.1, 0.05, 0.02)
        work = {sel: index._ann_work(10, round(n * sel)) for sel in sels}
        assert work[1.0] == (10, False)  # k results (efSearch is raised to 24 in the search)
        assert work[0.5] == (40, False)  # k / sel x margin 2
        assert work[0.3][1] and work[0.1][1] and work[0.05][1]
        assert work[0.3][0] < work[0.1][0] < work[0.05][0]
        assert 100 <= work[0.1][0] <= 115  # 24 x 0.9 / 0.1^0.7 = 108
        assert work[0.02] == (1000, False)
    finally:
        index.close()


# The codes shortlist costs nothing and the alternatives "infinity": every filter uses it.
FORCE_CODES = IndexOptions(
    codes_rows=0, codes_ns=0.0, mask_ns=0.0, codes_fixed_ns=0.0, ann_ns=1e12, scan_ns=1e12
)


@pytest.mark.parametrize(
    "flt",
    [
        by_created(0.5),
        by_created(0.1),
        by_created(0.05),  # few enough to come as a sorted row list, not a mask
        Filter(status=("active",)),
        Filter(status=("archived",)),
        Filter(status=("draft",), owner_id=None, created_to=ms_to_iso(BASE_MS + N // 2)),
    ],
    ids=["created50", "created10", "created5-listed", "active", "archived", "draft+to"],
)
def test_memory_recall_by_codes(rsetup: RecallSetup, flt: Filter) -> None:
    """The sign-bit codes shortlist + exact re-rank keeps recall@10 >= 0.95 for filters given
    as a mask or as a row list, and its scores are the exact ones."""
    index = MemoryIndex(rsetup.db, rsetup.model, options=FORCE_CODES)
    try:
        index.open()
        assert measure(index, rsetup, flt) >= 0.95
        assert index.stats()["strategies"] == {"codes+rerank": 100}
        for q in rsetup.queries[:10]:
            hits, truth = index.search(q, 10, flt), rsetup.exact.search(q, 10, flt)
            common = set(hits.nums.tolist()) & set(truth.nums.tolist())
            mine = dict(zip(hits.nums.tolist(), hits.scores.tolist(), strict=True))
            exact = dict(zip(truth.nums.tolist(), truth.scores.tolist(), strict=True))
            assert all(abs(mine[n] - exact[n]) < 1e-5 for n in common)
    finally:
        index.close()


def test_planner_prices_the_codes_path(rsetup: RecallSetup) -> None:
    """With the default costs: unfiltered searches take the graph; a filter keeping 10% of a
    large enough index takes the codes; fewer than ``codes_rows`` allowed rows are scanned
    exactly; without codes (``use_codes=False``) the codes path is never priced."""
    index = MemoryIndex(rsetup.db, rsetup.model, options=replace(IndexOptions(), codes_rows=0))
    plain = MemoryIndex(rsetup.db, rsetup.model, options=IndexOptions(use_codes=False))
    try:
        index.open()
        plain.open()
        rows = index._rows
        mask = np.zeros(rows.n, dtype=bool)
        mask[np.random.default_rng(1).permutation(rows.n)[: rows.n // 10]] = True
        n_allowed = int(mask.sum())
        work = index._ann_work(10, n_allowed)[0]
        assert index._codes_cost(10, n_allowed, masked=True) < index.opts.ann_cost(work)
        assert index._plan(10, n_allowed, mask, work)[0] == "codes"
        assert index._codes_cost(10, rows.live, masked=False) == float("inf")
        assert plain._codes_cost(10, n_allowed, masked=True) == float("inf")
        assert plain._rows.codes is None
        few = replace(IndexOptions(), codes_rows=n_allowed + 1)
        below = MemoryIndex(rsetup.db, rsetup.model, options=few).open()
        try:  # fewer allowed rows than codes_rows: exact scores, no codes
            assert below._codes_cost(10, n_allowed, masked=True) == float("inf")
        finally:
            below.close()
    finally:
        index.close()
        plain.close()


def test_few_allowed_rows_are_not_filtered_in_the_graph(rsetup: RecallSetup) -> None:
    """Below ``filter_rows`` allowed rows the ANN path over-fetches instead (the graph search
    would route to too few of them), even at a selectivity that filters in the graph."""
    index = MemoryIndex(rsetup.db, rsetup.model, options=replace(FORCE_ANN, filter_rows=4_000))
    index.open()
    try:
        assert measure(index, rsetup, by_created(0.5), 30) >= 0.95  # 3,000 rows < 4,000
        assert set(index.stats()["strategies"]) == {"ann+overfetch"}  # type: ignore[arg-type]
    finally:
        index.close()


@pytest.mark.parametrize(
    "flt",
    [
        Filter(status=("archived",)),
        Filter(status=("archived", "draft"), created_from=ms_to_iso(BASE_MS + N * 4 // 5)),
        Filter(metadata={"team": "b"}),
        Filter(metadata={"team": "b"}, status=("active",)),
        Filter(status=("draft",), created_to=ms_to_iso(BASE_MS + N // 5)),
    ],
    ids=["archived", "archived+draft+from", "meta", "meta+status", "draft+to"],
)
def test_filters_match_sql(rsetup: RecallSetup, flt: Filter) -> None:
    """What the mirror allows equals what SQL allows, for status, created and metadata filters."""
    where = ["1 = 1"]
    params: list[Any] = []
    if flt.status:
        where.append(f"p.status IN ({','.join('?' * len(flt.status))})")
        params += list(flt.status)
    if flt.created_from:
        where.append("p.created_at >= ?")
        params.append(flt.created_from)
    if flt.created_to:
        where.append("p.created_at < ?")
        params.append(flt.created_to)
    for key, value in flt.metadata.items():
        where.append(f"json_extract(p.metadata, '$.{key}') = ?")
        params.append(value)
    with UnitOfWork(rsetup.db) as uow:
        rows = uow.fetchall(
            "SELECT k.num FROM prompts p JOIN prompt_keys k ON k.prompt_id = p.id "
            f"WHERE {' AND '.join(where)}",
            params,
        )
    want = {int(r[0]) for r in rows}
    assert 0 < len(want) <= 1000
    got = set(rsetup.exact.search(rsetup.queries[0], 1000, flt).nums.tolist())
    assert got == want


def test_owner_filter(rsetup: RecallSetup) -> None:
    """An owner filter returns only that owner's prompts; an unknown owner returns nothing."""
    owner = rsetup.seeded.owners[2]
    with UnitOfWork(rsetup.db) as uow:
        rows = uow.fetchall(
            "SELECT k.num FROM prompts p JOIN prompt_keys k ON k.prompt_id = p.id "
            "WHERE p.owner_id = ?",
            (owner,),
        )
    want = {int(r[0]) for r in rows}
    hits = rsetup.exact.search(rsetup.queries[1], 1000, Filter(owner_id=owner))
    assert set(hits.nums.tolist()) == want
    assert len(rsetup.exact.search(rsetup.queries[1], 10, Filter(owner_id=new_id())).nums) == 0


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "k"),
    [
        (np.ones(DIM - 1, np.float32), 10),
        (np.full(DIM, np.nan, np.float32), 10),
        (np.full(DIM, np.inf, np.float32), 10),
        (np.zeros(DIM, np.float32), 10),
        (np.ones(DIM, np.float32), 0),
        (np.ones(DIM, np.float32), 1001),
        (np.ones(DIM, np.float32), -3),
        (np.ones((2, DIM), np.float32), 10),
    ],
    ids=["short", "nan", "inf", "zero", "k0", "k1001", "kneg", "matrix"],
)
def test_bad_queries_are_invalid_input(rsetup: RecallSetup, vector: np.ndarray, k: int) -> None:
    """Wrong dimension, NaN/inf, a zero vector and k out of 1..1000 are InvalidInput."""
    with pytest.raises(InvalidInput):
        rsetup.exact.search(vector, k, Filter())


def test_bad_created_bound_is_invalid_input(rsetup: RecallSetup) -> None:
    """A malformed or empty created range is InvalidInput, before any search work."""
    q = rsetup.queries[0]
    with pytest.raises(InvalidInput):
        rsetup.exact.search(q, 10, Filter(created_from="yesterday"))
    with pytest.raises(InvalidInput):
        rsetup.exact.search(q, 10, Filter(created_from="2026-02-01", created_to="2026-01-01"))


def test_open_index_unknown_kind_and_model(tmp_path: Path) -> None:
    """An unknown backend is InvalidInput; an unregistered model is NotFound."""
    db = embedded_db(tmp_path)
    try:
        with pytest.raises(InvalidInput):
            open_index(db, MODEL, "faiss", tmp_path)
        with pytest.raises(NotFound):
            open_index(db, "no-such-model", "memory", tmp_path)
    finally:
        db.close()


# --- persistence ----------------------------------------------------------------------------------


def state(index: ExactIndex) -> dict[int, tuple[bytes, int, str, int]]:
    """num -> (vector bytes, status code, owner, created) of every live row."""
    rows = index._rows
    out = {}
    for row in range(rows.n):
        if rows.alive[row]:
            owner = next(o for o, c in rows.owners.items() if c == rows.owner[row])
            out[int(rows.nums[row])] = (
                rows.vecs[row].round(6).tobytes(),
                int(rows.status[row]),
                owner,
                int(rows.created[row]),
            )
    return out


SMALL = IndexOptions(small=100)  # an ANN index even for the small snapshot tests


@pytest.fixture
def small_db(tmp_path: Path) -> Iterator[tuple[Database, Seeded, np.ndarray]]:
    """An embedded database with 1,200 vectors (and spare ones for later writes)."""
    db = embedded_db(tmp_path)
    vectors = clustered(1_300, 3)
    try:
        yield db, seed(db, vectors[:1_200]), vectors
    finally:
        db.close()


def change_everything(db: Database, seeded: Seeded, spare: np.ndarray) -> None:
    """Journal all kinds of change: new vectors, changed vectors, deletions, status changes."""
    extra = seed(db, spare[:40])
    store = VectorStore(get_model(db, MODEL))
    with UnitOfWork(db, write=True) as uow:
        for i, pid in enumerate(seeded.ids[:15]):
            store.upsert(uow, pid, 1, "h2", spare[60 + i])
        for pid in seeded.ids[20:30] + extra.ids[:5]:
            store.delete(uow, pid)
        uow.commit()
    for pid in seeded.ids[40:60]:
        svc.set_status(db, pid, "archived")


def test_snapshot_plus_journal_equals_fresh_build(
    small_db: tuple[Database, Seeded, np.ndarray], tmp_path: Path
) -> None:
    """A warm start (snapshot + journal replay, no rebuild) ends equal to a build from libSQL."""
    db, seeded, vectors = small_db
    first = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    assert "build_s" in first.stats()
    first.close()
    change_everything(db, seeded, vectors[1_200:])
    warm = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    fresh = MemoryIndex(db, get_model(db, MODEL), options=SMALL).open()
    try:
        stats = warm.stats()
        assert "load_s" in stats
        assert "build_s" not in stats
        assert stats["journal_seq"] == journal_head(db)
        assert isinstance(warm, MemoryIndex)
        assert state(warm) == state(fresh)
        assert stats["vectors"] == fresh.stats()["vectors"] == 1_200 + 40 - 15
        queries = clustered(30, 9)
        flt = Filter(status=("archived",))
        assert set(warm.search(queries[0], 50, flt).nums.tolist()) == set(
            nums_of(db, seeded.ids[40:60])
        )
        exact = ExactIndex(db, get_model(db, MODEL)).open()
        found = [warm.search(q, 10, Filter()).nums for q in queries]
        truth = [exact.search(q, 10, Filter()).nums for q in queries]
        assert recall(found, truth) >= 0.95
        tombstones = warm.stats()["tombstones"]
        assert tombstones == 25  # 15 changed + 10 deleted vectors (5 never reached the graph)
        warm.close()  # saves the graph with its tombstones (nums -1)
        again = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
        assert isinstance(again, MemoryIndex) and "load_s" in again.stats()
        assert again.stats()["tombstones"] == tombstones
        assert state(again) == state(fresh)
        assert [again.search(q, 10, Filter()).nums.tolist() for q in queries] == [
            f.tolist() for f in found
        ]
        again.close()
    finally:
        warm.close()
        fresh.close()


def test_snapshot_files_are_private(
    small_db: tuple[Database, Seeded, np.ndarray], tmp_path: Path
) -> None:
    """Snapshot folders are 0700 and files 0600; CURRENT names the one folder kept."""
    db, _, _ = small_db
    index = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    index.close()
    root = tmp_path / "idx" / "dev.index" / "all_minilm_l6_v2"
    current = (root / "CURRENT").read_text()
    assert [p.name for p in root.iterdir() if p.is_dir()] == [current]
    for path in [root, root / current, *(root / current).iterdir()]:
        want = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == want, path
    # with a graph, its file holds the vectors: no second copy in vectors.npy
    assert {p.name for p in (root / current).iterdir()} == {"meta.json", "nums.npy", "ann.faiss"}


def damage(root: Path, how: str, db: Database) -> None:
    """Damage the current snapshot in one of several ways."""
    folder = root / (root / "CURRENT").read_text()
    if how == "vectors":  # the middle of the graph file is vector data
        path = folder / "ann.faiss"
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = os.urandom(64)
        path.write_bytes(bytes(data))
    elif how == "ann-truncated":
        path = folder / "ann.faiss"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "current":
        (root / "CURRENT").write_text("snap-000000000001-dead")
    elif how == "meta-garbage":
        (folder / "meta.json").write_text("{not json")
    elif how == "other-dimension":
        meta = json.loads((folder / "meta.json").read_text())
        meta["dimension"] = 768
        (folder / "meta.json").write_text(json.dumps(meta))
    elif how == "journal-pruned":  # entries after the snapshot were deleted from the journal
        with UnitOfWork(db, write=True) as uow:
            uow.execute("DELETE FROM vector_journal WHERE seq <= ?", (journal_head(db) - 3,))
            uow.commit()


@pytest.mark.parametrize(
    "how",
    ["vectors", "ann-truncated", "current", "meta-garbage", "other-dimension", "journal-pruned"],
)
def test_damaged_snapshot_is_rebuilt(
    small_db: tuple[Database, Seeded, np.ndarray], tmp_path: Path, how: str
) -> None:
    """A damaged, foreign or too-old snapshot is rebuilt from libSQL (and saved), never a crash."""
    db, seeded, vectors = small_db
    open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL).close()
    change_everything(db, seeded, vectors[1_200:])
    root = tmp_path / "idx" / "dev.index" / "all_minilm_l6_v2"
    damage(root, how, db)
    index = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    fresh = ExactIndex(db, get_model(db, MODEL)).open()
    try:
        assert "build_s" in index.stats()
        assert isinstance(index, MemoryIndex)
        assert state(index) == state(fresh)
    finally:
        index.close()
        fresh.close()
    again = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    assert "load_s" in again.stats()  # the rebuild saved a good snapshot
    again.close()


# --- consistency ----------------------------------------------------------------------------------

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
from autoforge_data.vector.store import VectorStore, get_model

tmp, action, arg = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
with Database(Settings.load("dev", base_dir=tmp, data_dir=tmp / "data")) as db:
    if action == "insert":
        vec = np.array(json.loads(arg), dtype=np.float32)
        owner = svc.create_user(db, "child@example.com", "child").id
        pid = svc.create_prompt(db, owner, "from the child", "written by another process").id
        with UnitOfWork(db, write=True) as uow:
            VectorStore(get_model(db, "all-MiniLM-L6-v2")).upsert(uow, pid, 1, "h", vec)
            uow.commit()
    elif action == "meta":
        pid, meta = json.loads(arg)
        with UnitOfWork(db, write=True) as uow:
            uow.execute("UPDATE prompts SET metadata = ? WHERE id = ?", (json.dumps(meta), pid))
            uow.commit()
    else:
        pid = arg
        svc.set_status(db, pid, "archived")
    print(json.dumps({"id": pid, "committed": time.time()}), flush=True)
"""


def run_child(tmp: Path, action: str, arg: str) -> dict[str, Any]:
    """Run the child writer; returns its prompt id and the wall time its commit returned."""
    script = tmp / "child.py"
    script.write_text(CHILD)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp), action, arg],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def child_commit(tmp: Path, action: str, arg: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the child writer and return once it reports its commit (it may still be exiting:
    under load an interpreter's exit takes long enough to distort a 1 s bound)."""
    script = tmp / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp), action, arg], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child writer failed"
    info: dict[str, Any] = json.loads(line)
    return proc, info


def wait_until(check: Any, limit: float = 3.0) -> float:
    """Seconds until ``check()`` is true (polling every 10 ms); fails after ``limit``."""
    start = time.time()
    while not check():
        assert time.time() - start < limit, "not visible in time"
        time.sleep(0.01)
    return time.time()


def test_other_process_writes_visible_within_1s(
    small_db: tuple[Database, Seeded, np.ndarray], tmp_path: Path
) -> None:
    """A vector and a status change committed by another process are searchable within 1 s."""
    db, _, vectors = small_db
    index = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    try:
        vec = vectors[1_250]
        # polled from the moment the child reports its commit (not once it has exited)
        proc, child = child_commit(tmp_path, "insert", json.dumps(vec.tolist()))
        num = nums_of(db, [child["id"]])[0]
        seen = wait_until(lambda: index.search(vec, 1, Filter()).nums.tolist() == [num])
        assert proc.wait(timeout=60) == 0
        assert seen - child["committed"] < 1.0
        drafts = Filter(status=("draft",))  # the child's prompt is a draft, all others active
        assert index.search(vec, 5, drafts).nums.tolist() == [num]
        proc, child = child_commit(tmp_path, "status", child["id"])
        seen = wait_until(lambda: index.search(vec, 5, drafts).nums.tolist() == [])
        assert proc.wait(timeout=60) == 0
        assert seen - child["committed"] < 1.0
    finally:
        index.close()


def meta_db(tmp: Path) -> tuple[Database, Seeded, np.ndarray]:
    """600 prompts whose metadata mixes value types: ints, floats, strings, bools, JSON."""
    db = embedded_db(tmp)
    vectors = clustered(600, 4)
    kinds: list[Any] = [1, 1.0, "1", True, "a", 2.5, None, [1], {"z": 1}, "é"]
    metadata = [
        {"v": kinds[i % len(kinds)], "t": f"t{i % 7}"} if i % 11 else {} for i in range(600)
    ]
    return db, seed(db, vectors, metadata=metadata), vectors


def sql_nums(db: Database, flt: Filter) -> set[int]:
    """What SQL's own filter allows (the reference the mirror must equal)."""
    return {int(n) for n in allowed_nums(db, flt)}


@pytest.mark.parametrize("kind", ["memory", "exact"])
def test_metadata_filters_are_mirrored_and_match_sql(tmp_path: Path, kind: str) -> None:
    """Metadata-key filters run on the in-memory mirror and allow exactly what SQL's ``=`` on
    ``json_extract`` allows, for every value type (1 = 1.0 = true, '1' is not 1, JSON text)."""
    db, _, vectors = meta_db(tmp_path)
    index = open_index(db, MODEL, kind, tmp_path / "idx", options=IndexOptions(small=100))
    try:
        values: list[Any] = [1, 1.0, "1", True, False, "a", 2.5, "[1]", '{"z":1}', "é", "zz", 7]
        for value in values:
            for flt in (
                Filter(metadata={"v": value}),
                Filter(metadata={"v": value, "t": "t3"}, status=("active",)),
            ):
                got = set(index.search(vectors[0], 1000, flt).nums.tolist())
                assert got == sql_nums(db, flt), flt
        assert index.stats()["metadata_keys"] == ["t", "v"]
        assert index.search(vectors[0], 5, Filter(metadata={"nokey": 1})).nums.tolist() == []
    finally:
        index.close()
        db.close()


def test_metadata_mirror_follows_the_journal(tmp_path: Path) -> None:
    """A metadata change committed by another process reaches the mirror within 1 s (the
    journal trigger of migration 0004); a search never needs SQL for the mirrored key."""
    db, seeded, vectors = meta_db(tmp_path)
    index = open_index(db, MODEL, "memory", tmp_path / "idx", options=IndexOptions(small=100))
    try:
        flt = Filter(metadata={"team": "red"})
        assert index.search(vectors[5], 5, flt).nums.tolist() == []
        keys = index.stats()["metadata_keys"]
        assert isinstance(keys, list) and "team" in keys
        for team, want in (("red", [seeded.nums[5]]), ("blue", [])):
            proc, child = child_commit(
                tmp_path, "meta", json.dumps([seeded.ids[5], {"team": team}])
            )
            seen = wait_until(lambda w=want: index.search(vectors[5], 5, flt).nums.tolist() == w)
            assert proc.wait(timeout=60) == 0
            assert seen - child["committed"] < 1.0
    finally:
        index.close()
        db.close()


def test_metadata_mirror_needs_the_journal_trigger(tmp_path: Path) -> None:
    """Sensitivity arm: with the 0003 trigger (status and owner only) a mirrored key would go
    stale, so the index keeps asking SQL; forcing the mirror there does go stale."""
    db, seeded, vectors = meta_db(tmp_path)
    migrate.downgrade(db, "0003")
    index = MemoryIndex(db, get_model(db, MODEL), options=IndexOptions(small=100)).open()
    forced = MemoryIndex(db, get_model(db, MODEL), options=IndexOptions(small=100)).open()
    forced._meta_journaled = True  # pretend the journal covered metadata
    try:
        flt = Filter(metadata={"team": "red"})
        for ix in (index, forced):
            assert ix.search(vectors[5], 5, flt).nums.tolist() == []
        assert index.stats()["metadata_keys"] == []
        assert forced.stats()["metadata_keys"] == ["team"]
        run_child(tmp_path, "meta", json.dumps([seeded.ids[5], {"team": "red"}]))
        assert index.search(vectors[5], 5, flt).nums.tolist() == [seeded.nums[5]]
        time.sleep(1.2)
        forced.refresh()
        assert forced.search(vectors[5], 5, flt).nums.tolist() == []  # stale: no journal entry
    finally:
        index.close()
        forced.close()
        db.close()


@pytest.mark.parametrize("kind", ["memory", "exact"])
def test_own_writes_visible_immediately(db: Database, tmp_path: Path, kind: str) -> None:
    """A write whose unit of work refreshes the index after commit is found by the next search.

    Runs against an embedded file, a remote sqld and an embedded replica. The refresh interval
    is an hour, so only the after-commit refresh can make the write visible.
    """
    opts = IndexOptions(small=0, refresh_interval=3600.0)
    model = get_model(db, MODEL)
    index: ExactIndex = (
        MemoryIndex(db, model, folder=tmp_path / "idx", options=opts)
        if kind == "memory"
        else ExactIndex(db, model, options=opts)
    ).open()
    try:
        vecs = clustered(3, fresh_seed())
        seeded = seed(db, vecs[:1])
        index.refresh()
        pid = seeded.ids[0]
        upsert(db, pid, vecs[1], index)
        assert index.search(vecs[1], 1, Filter()).nums.tolist() == seeded.nums
        svc.set_status(db, pid, "archived")  # not refreshed: invisible for now
        assert seeded.nums[0] in index.search(vecs[1], 3, Filter(status=("active",))).nums
        index.refresh()
        assert seeded.nums[0] not in index.search(vecs[1], 3, Filter(status=("active",))).nums
    finally:
        index.close()


@pytest.mark.parametrize("kind", ["memory", "exact"])
def test_journal_seen_without_explicit_refresh(db: Database, tmp_path: Path, kind: str) -> None:
    """Without an explicit refresh a write becomes visible through the timed journal check."""
    model = get_model(db, MODEL)
    opts = IndexOptions(small=0)
    index = open_index(db, model, kind, tmp_path / "idx", options=opts)
    try:
        vec = clustered(1, fresh_seed())[0]
        seeded = seed(db, vec[None, :])
        start = time.time()
        limit = 3.0 if db.replica is not None else 1.5  # + the replica's 1 s sync interval
        seen = wait_until(
            lambda: index.search(vec, 1, Filter()).nums.tolist() == seeded.nums, limit
        )
        assert seen - start < limit
    finally:
        index.close()


@pytest.mark.parametrize("options", [FORCE_ANN, IndexOptions()], ids=["ann", "planner"])
def test_delete_one_of_two_identical_vectors(db: Database, options: IndexOptions) -> None:
    """Deleting one of two identical vectors keeps the other findable (cf. libsql issue 2197)."""
    model = get_model(db, MODEL)
    vecs = clustered(202, fresh_seed())
    twin = vecs[0]
    seeded = seed(db, np.vstack([twin, twin, vecs[2:]]))
    index = MemoryIndex(db, model, options=options).open()
    try:
        top = set(index.search(twin, 2, Filter()).nums.tolist())
        assert top == set(seeded.nums[:2])
        with UnitOfWork(db, write=True) as uow:
            VectorStore(model).delete(uow, seeded.ids[0])
            uow.after_commit(refresher(index))
            uow.commit()
        hits = index.search(twin, 3, Filter())
        assert hits.nums[0] == seeded.nums[1]
        assert seeded.nums[0] not in hits.nums
        assert hits.scores[0] == pytest.approx(1.0, abs=1e-5)
    finally:
        index.close()


def test_concurrent_searches_during_writes(
    small_db: tuple[Database, Seeded, np.ndarray], tmp_path: Path
) -> None:
    """Searches in threads while the journal is applied never fail or see a half-applied state."""
    db, seeded, vectors = small_db
    index = open_index(db, MODEL, "memory", tmp_path / "idx", options=SMALL)
    errors: list[BaseException] = []
    stop = threading.Event()
    queries = clustered(20, 11)

    def searcher() -> None:
        try:
            while not stop.is_set():
                for q in queries:
                    hits = index.search(q, 10, Filter(status=("active",)))
                    assert len(hits.nums) == 10
                    assert len(set(hits.nums.tolist())) == 10
                    assert np.all(np.diff(hits.scores) <= 1e-6)
        except BaseException as exc:  # report to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        store = VectorStore(get_model(db, MODEL))
        for i in range(20):
            with UnitOfWork(db, write=True) as uow:
                store.upsert(uow, seeded.ids[i], 1, "h", vectors[1_200 + i])
                store.delete(uow, seeded.ids[100 + i])
                uow.after_commit(refresher(index))
                uow.commit()
            svc.set_status(db, seeded.ids[200 + i], "archived")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert not errors, errors
        index.refresh()
        assert isinstance(index, MemoryIndex)
        fresh = ExactIndex(db, get_model(db, MODEL)).open()
        assert state(index) == state(fresh)
        fresh.close()
    finally:
        index.close()


def test_contiguous_filter_is_exact(small_db: tuple[Database, Seeded, np.ndarray]) -> None:
    """A filter matching a block of consecutive rows (scanned as matrix slices) is exact."""
    db, seeded, vectors = small_db
    with UnitOfWork(db, write=True) as uow:
        marks = ",".join("?" * 400)
        uow.execute(
            f"UPDATE prompts SET status = 'archived' WHERE id IN ({marks})",
            tuple(seeded.ids[500:900]),
        )
        uow.commit()
    # without codes: 400 allowed rows would otherwise take the (approximate) codes shortlist
    index = MemoryIndex(db, get_model(db, MODEL), options=replace(SMALL, use_codes=False)).open()
    try:
        block = vectors[500:900]
        for q in clustered(5, 12):
            hits = index.search(q, 10, Filter(status=("archived",)))
            want = np.argsort(-(block @ q), kind="stable")[:10]
            assert hits.nums.tolist() == [seeded.nums[500 + int(i)] for i in want]
            assert hits.strategy == "exact-subset"
    finally:
        index.close()


def test_l2_model(tmp_path: Path) -> None:
    """An l2 model is searched by distance (score = -distance), exactly and through the ANN."""
    db = embedded_db(tmp_path)
    try:
        model = register_model(db, "l2-test", 16, metric="l2", normalized=False)
        rng = np.random.default_rng(3)
        vectors = (rng.standard_normal((600, 16)) * 3).astype(np.float32)
        owner = svc.create_user(db, unique_email(), "l2").id
        ids = [new_id() for _ in vectors]
        with UnitOfWork(db, write=True) as uow:
            insert_prompts_bulk(
                uow, owner, "active", ms_to_iso(BASE_MS), [(pid, "t", "c") for pid in ids]
            )
            VectorStore(model).upsert_many(
                uow, [(pid, 1, "h", v) for pid, v in zip(ids, vectors, strict=True)]
            )
            uow.commit()
        nums = nums_of(db, ids)
        exact = ExactIndex(db, model).open()
        ann = MemoryIndex(db, model, options=FORCE_ANN).open()
        queries = (rng.standard_normal((30, 16)) * 3).astype(np.float32)
        found, truth = [], []
        for q in queries:
            dist = np.linalg.norm(vectors - q, axis=1)
            order = np.argsort(dist, kind="stable")[:10]
            hits = exact.search(q, 10, Filter())
            assert hits.nums.tolist() == [nums[int(i)] for i in order]
            assert np.allclose(hits.scores, -dist[order], atol=1e-4)
            found.append(ann.search(q, 10, Filter()).nums)
            truth.append(hits.nums)
        assert recall(found, truth) >= 0.95
        exact.close()
        ann.close()
    finally:
        db.close()


def test_stats_report_sizes_and_strategies(rsetup: RecallSetup) -> None:
    """stats() reports the vector count, memory, ANN and how many queries used each strategy."""
    index = MemoryIndex(rsetup.db, rsetup.model).open()
    try:
        index.search(rsetup.queries[0], 10, Filter())
        index.search(rsetup.queries[0], 10, by_created(0.001))
        stats = index.stats()
        assert stats["vectors"] == N
        assert stats["ann"] is True
        assert stats["strategies"] == {"ann": 1, "exact-subset": 1}
        memory_mb = stats["memory_mb"]
        assert isinstance(memory_mb, float)
        assert memory_mb < 2.0 * N * DIM * 4 / 2**20
    finally:
        index.close()


def test_dots_by_index_reads_rows_in_place_and_checks_bounds() -> None:
    """The in-place exact scores equal a numpy gather, on writable and read-only matrices; an
    index out of range is an error before the C code runs; no rows, no scores."""
    from autoforge_data.vector.ann import dots_by_index

    rng = np.random.default_rng(2)
    matrix = rng.standard_normal((300, 16)).astype(np.float32)
    q = matrix[7]
    rows = np.array([299, 0, 7, 7, 150])
    assert np.allclose(dots_by_index(matrix, q, rows), matrix[rows] @ q, atol=1e-5)
    frozen = matrix.copy()
    frozen.flags.writeable = False
    assert np.allclose(dots_by_index(frozen, q, rows), matrix[rows] @ q, atol=1e-5)
    assert dots_by_index(matrix, q, np.empty(0, dtype=np.int64)).shape == (0,)
    for bad in ([300], [-1], [5, 1_000_000]):
        with pytest.raises(IndexError):
            dots_by_index(matrix, q, np.array(bad))
    with pytest.raises(ValueError):
        dots_by_index(np.asfortranarray(matrix), q, rows)


def test_mask_runs_counts_like_the_row_list() -> None:
    """Runs counted on a mask equal runs of the listed rows (the planner's cheaper count)."""
    from autoforge_data.vector.index import _mask_runs, _runs

    rng = np.random.default_rng(4)
    for _ in range(300):
        mask = rng.random(int(rng.integers(0, 60))) < rng.random()
        assert _mask_runs(mask) == _runs(np.flatnonzero(mask))
