"""Vector index backends mirrored from libSQL: ``memory`` (faiss HNSW, the default) and ``exact``.

libSQL stays the system of record; these indexes hold a copy in memory and follow the
``vector_journal`` (written by triggers in every writer's transaction) to stay current:

* :class:`~autoforge_data.vector.memory.MemoryIndex` — a faiss HNSW graph (M=24,
  efConstruction 100, exact float32 inner products) that stores the vectors once: the rows'
  matrix is a view of its storage. Plus the
  filter mirror (status, owner, created time and the values of the metadata keys searches filter
  on), so a filter is a numpy mask, never SQL. A cost-based planner picks per query between a
  graph search that walks through disallowed rows without returning them (efSearch sized to the
  filter's selectivity; 2-50% and 2,000 rows or more), the ANN with an over-fetch sized to it,
  a shortlist by sign-bit codes re-ranked exactly (:mod:`.codes`), and an exact scan of the
  allowed rows. Persisted as a snapshot (:mod:`.snapshot`) so a start
  loads it and replays the journal instead of rebuilding.
* :class:`ExactIndex` — brute force over its own matrix and the same mirror; for small
  collections and as the recall reference.

The mirror is as current as the journal position: a search applies the journal first when it
was last read more than ``refresh_interval`` (0.5 s) ago, and a writer that refreshes after its
commit sees its own write at once. Metadata keys are mirrored only when the journal records
metadata changes (migration 0004); on an older schema their filters are evaluated in SQL.

Why faiss and these parameters: :mod:`.ann`. :func:`open_index` opens any backend by name
("libsql" is the native DiskANN backend in :mod:`autoforge_data.vector.libsql_index`).
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.errors import AfdbError, ConfigError, InvalidInput
from autoforge_data.vector.ann import Ann, IndexOptions, dots_by_index
from autoforge_data.vector.base import (
    MAX_K,
    Filter,
    Hits,
    Nums,
    Vector,
    VectorIndex,
    check_query,
)
from autoforge_data.vector.mirror import (
    Rows,
    allowed_nums,
    created_bounds,
    fetch_vectors,
    meta_rows,
    metadata_covered,
)
from autoforge_data.vector.snapshot import index_dir
from autoforge_data.vector.store import (
    ModelRow,
    VectorStore,
    active_model,
    get_model,
    journal_head,
    journal_since,
)

__all__ = ["BACKENDS", "ExactIndex", "IndexOptions", "open_index"]

BACKENDS = ("memory", "exact", "libsql")
_NO_FILTER = Filter()
JOURNAL_PAGE = 10_000
RUN_MIN = 32  # mean run length from which slicing the matrix beats gathering rows
log = logging.getLogger(__name__)


class ExactIndex:
    """Brute force over the float32 matrix with mirror-based filters; the recall reference."""

    name = "exact"

    def __init__(
        self, db: Database, model: ModelRow, *, options: IndexOptions | None = None
    ) -> None:
        self.db = db
        self.model = model
        self.store = VectorStore(model)
        self.opts = options or IndexOptions()
        self.dimension = model.dimension
        self._lock = threading.RLock()  # guards the rows, the ANN and the journal position
        self._refresh_lock = threading.Lock()  # one journal reader at a time
        self._rows = self._empty_rows()
        self._ann: Ann | None = None
        self._meta_journaled: bool | None = None  # does the journal record metadata changes?
        self._seq = 0
        self._last_refresh = 0.0
        self._unsaved = 0
        self._strategies: dict[str, int] = {}
        self._timings: dict[str, float] = {}
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------

    def open(self) -> ExactIndex:
        """Load the vectors (from libSQL here; subclasses try a snapshot first)."""
        self.rebuild()
        return self

    def rebuild(self) -> None:
        """Read every vector and the filter mirror from libSQL, then apply the journal since."""
        with self._refresh_lock:  # no journal replay may interleave with the swap
            self._rebuild_locked()

    def _rebuild_locked(self) -> None:
        start = time.perf_counter()
        head = journal_head(self.db)  # read first: anything written later is replayed
        chunks = list(self.store.iter_all(self.db))
        nums = np.concatenate([c[0] for c in chunks]) if chunks else np.empty(0, np.int64)
        vecs = (
            np.concatenate([c[1] for c in chunks])
            if chunks
            else np.empty((0, self.dimension), np.float32)
        )
        rows = Rows(self.dimension, self.model.metric, nums, vecs)
        keys = list(self._rows.keys)  # metadata keys mirrored so far stay mirrored
        rows.track(keys)
        rows.set_meta(meta_rows(self.db, keys=keys), keys)
        ann = self._build_ann(rows) if self._wants_ann(rows) else None
        with self._lock:
            self._rows, self._ann, self._seq = rows, ann, head
        self._timings["build_s"] = round(time.perf_counter() - start, 3)
        self._refresh_locked()

    def close(self) -> None:
        """Release the memory (the index cannot be used afterwards)."""
        with self._lock:
            self._closed = True
            self._ann = None
            self._rows = self._empty_rows()

    def _empty_rows(self) -> Rows:
        empty = np.empty((0, self.dimension), np.float32)
        return Rows(self.dimension, self.model.metric, np.empty(0, np.int64), empty)

    def _wants_ann(self, rows: Rows) -> bool:
        return False

    def _build_ann(self, rows: Rows) -> Ann:
        """A graph over the live rows, which then view its storage (vectors held once)."""
        if rows.dead or rows.owner_of_vecs is not None:
            rows.compact()
        ann = Ann.build(rows.vecs[: rows.n], rows.metric, self.opts)
        start = time.perf_counter()
        order = ann.locality_order()
        if order is not None:  # near vectors near in memory (see IndexOptions)
            ann.permute(order)
            rows.permute(order)
            self._timings["locality_s"] = round(time.perf_counter() - start, 3)
        rows.adopt(ann)
        return ann

    # --- consistency ----------------------------------------------------------------------------

    def refresh(self) -> int:
        """Apply the journal since the last refresh (own and other processes' commits)."""
        if self._closed:
            return 0
        with self._refresh_lock:
            applied = self._refresh_locked()
        if self._unsaved >= self.opts.save_every:
            self._autosave()
        return applied

    def _refresh_locked(self) -> int:
        applied = 0
        while not self._closed:
            started = time.monotonic()
            entries = journal_since(self.db, self._seq, limit=JOURNAL_PAGE)
            if entries:
                self._apply(entries)
                applied += len(entries)
            self._last_refresh = started
            if len(entries) < JOURNAL_PAGE:
                break
        return applied

    def _apply(self, entries: list[tuple[int, str | None, int, str]]) -> None:
        """Bring the rows named by journal entries to their current state in libSQL."""
        touched = sorted({num for _, m, num, _ in entries if m == self.model.name})
        meta = sorted({num for _, m, num, _ in entries if m is None})
        vectors = fetch_vectors(self.db, self.model, touched)
        keys = list(self._rows.keys)  # only refresh (this thread) adds keys or swaps the rows
        nums = sorted(set(touched) | set(meta))
        metas = meta_rows(self.db, nums, keys) if nums else []
        with self._lock:
            if self._closed:
                return
            self._apply_vectors(touched, vectors)
            self._rows.set_meta(metas, keys)
            self._seq = entries[-1][0]
            self._unsaved += len(entries)

    def _apply_vectors(self, touched: list[int], vectors: dict[int, np.ndarray]) -> None:
        """Upsert and delete rows (a graph that owns the vectors gets the new ones), then let
        :meth:`_housekeep` compact or rebuild."""
        rows = self._rows
        for num in touched:
            vector = vectors.get(num)
            if vector is None:
                rows.delete(num)
            else:
                rows.upsert(num, vector)
        self._housekeep(len(touched))

    def _housekeep(self, changed: int) -> None:
        """Drop tombstones once they are an eighth of the rows."""
        rows = self._rows
        if rows.dead > max(1024, rows.n // 8):
            rows.compact()

    def _auto_refresh(self) -> None:
        """Apply the journal if the last refresh is older than the interval (never waits)."""
        if time.monotonic() - self._last_refresh < self.opts.refresh_interval:
            return
        if not self._refresh_lock.acquire(blocking=False):
            return  # another thread is refreshing right now
        try:
            self._refresh_locked()
        except AfdbError as exc:  # serve what we have; the next search tries again
            log.warning("index refresh failed, searching the last state: %s", exc.one_line())
        finally:
            self._refresh_lock.release()

    def _autosave(self) -> None:
        return None

    # --- search ---------------------------------------------------------------------------------

    def search(self, query: Vector, k: int, flt: Filter | None = None) -> Hits:
        """The k best prompts allowed by ``flt``; scores are cosine similarity (or -distance)."""
        flt = flt if flt is not None else _NO_FILTER
        q = self._query(query, k)
        if flt is _NO_FILTER or flt.empty:
            hits = self._unfiltered_ann(q, k)
            if hits is not None:
                return hits
        if flt.created_from is not None or flt.created_to is not None:
            created_bounds(flt)  # a malformed time fails before any work
        self._auto_refresh()
        allowed = None
        if flt.metadata and not self._mirror(flt):
            allowed = allowed_nums(self.db, flt)
        with self._lock:
            if self._closed:
                raise ConfigError("the vector index is closed")
            hits = self._search(q, k, flt, allowed)
            self._strategies[hits.strategy] = self._strategies.get(hits.strategy, 0) + 1
            return hits

    def _unfiltered_ann(self, q: Vector, k: int) -> Hits | None:
        """The common case on a short path: nothing filtered, no tombstones, a graph, and the
        planner's cost model prefers it to a full scan (None: take the general path)."""
        self._auto_refresh()
        o = self.opts
        with self._lock:
            ann, rows = self._ann, self._rows
            if (
                ann is None
                or rows.dead
                or self._closed
                or rows.n < o.small
                or o.rerank != 1.0
                or o.scan_ns * rows.n <= o.ann_cost(k)
            ):
                return None
            ids, scores = ann.search(q, k)
            if ids[-1] < 0:
                return None
            self._strategies["ann"] = self._strategies.get("ann", 0) + 1
            return Hits(rows.nums[ids], scores, k, "ann")

    def _mirror(self, flt: Filter) -> bool:
        """Make sure the filter's metadata keys are mirrored; False if they cannot be (the
        journal does not record metadata changes, or ``opts.meta_keys`` keys are mirrored).

        A new key is read for every prompt under the refresh lock (no journal replay runs
        meanwhile); entries after the index's position are replayed later and re-read the
        current values, so the column is exactly as current as the rest of the mirror.
        """
        if self._rows.mirrors(flt):
            return True
        if self._meta_journaled is None:
            self._meta_journaled = metadata_covered(self.db)
        if not self._meta_journaled:
            return False
        with self._refresh_lock:
            rows = self._rows
            new = [key for key in flt.metadata if key not in rows.keys]
            if len(rows.keys) + len(new) > self.opts.meta_keys:
                return False
            if new:
                metas = meta_rows(self.db, keys=new)
                with self._lock:
                    if self._closed or rows is not self._rows:
                        return False
                    rows.track(new)
                    rows.set_meta(metas, new)
        return True

    def _query(self, query: Vector, k: int) -> Vector:
        """The checked query (unit length for cosine). The usual case costs one dot product:
        a finite sum of squares proves every value finite; anything else gets the full check."""
        q = query
        if (
            type(q) is not np.ndarray
            or q.dtype != np.float32
            or q.shape != (self.dimension,)
            or type(k) is not int
            or not 1 <= k <= MAX_K
            or not math.isfinite(squares := float(np.dot(q, q)))
        ):
            q = check_query(query, self.dimension, k)
            squares = float(np.dot(q.astype(np.float64), q.astype(np.float64)))
        if self.model.metric == "cosine":
            if squares == 0.0:
                raise InvalidInput("query vector is all zeros", hint="cosine needs a direction")
            if abs(squares - 1.0) > 1e-6:  # embedders return unit vectors: no copy for those
                q = q * np.float32(1.0 / math.sqrt(squares))
        return q

    def _search(self, q: Vector, k: int, flt: Filter, allowed: Nums | None) -> Hits:
        rows = self._rows
        listed = None  # the allowed rows, sorted, when sorted columns found them
        if flt.empty:
            mask = rows.alive[: rows.n] if rows.dead else None
            n_allowed = rows.live
        elif allowed is None and (listed := rows.select(flt)) is not None:
            mask, n_allowed = None, len(listed)
        else:
            mask = rows.mask(flt, allowed)
            n_allowed = int(np.count_nonzero(mask))
        if n_allowed == 0:
            return Hits(np.empty(0, np.int64), np.empty(0, np.float32), 0, "empty")
        work = self._ann_work(k, n_allowed)  # the ANN path's size, priced by the planner
        if listed is not None:
            plan, cand = self._plan_listed(k, listed, work[0])
        else:
            plan, cand = self._plan(k, n_allowed, mask, work[0])
        if plan == "codes":
            return self._codes_search(q, k, n_allowed, mask, listed)
        if plan == "ann":
            if listed is not None:
                mask = np.zeros(rows.n, dtype=bool)
                mask[listed] = True
            hits = self._ann_search(q, k, mask, n_allowed, work)
            if hits is not None:
                return hits
        strategy = "exact" if n_allowed == rows.live else "exact-subset"
        return self._exact(q, k, mask, n_allowed, strategy=strategy, cand=cand)

    def _plan(
        self, k: int, n_allowed: int, mask: np.ndarray | None, ann_work: int
    ) -> tuple[str, np.ndarray | None]:
        """'ann', 'codes' or 'exact', whichever costs least by the model (+ the allowed rows
        if listed)."""
        rows, o = self._rows, self.opts
        if self._ann is None or rows.live < o.small:
            return "exact", None
        costs = self._costs(k, n_allowed, ann_work, masked=True)
        ann_cost = min(costs.values())  # the cheapest approximate path
        exact_cost = o.scan_ns * rows.n  # the whole matrix, contiguous
        if mask is not None and n_allowed < rows.live:
            exact_cost = min(exact_cost, o.gather_ns * n_allowed)
            # A scan beats the others only if the allowed rows lie in long runs (e.g. a recent
            # created range: rows are in num order, nums in creation order): look (counting
            # runs on the mask costs ~6 us at 50k, listing the rows first ~40).
            if exact_cost > ann_cost >= o.scan_ns * n_allowed and (
                _mask_runs(mask) * RUN_MIN <= n_allowed
            ):
                return "exact", np.flatnonzero(mask)
        return _cheapest(exact_cost, costs), None

    def _costs(self, k: int, n_allowed: int, ann_work: int, *, masked: bool) -> dict[str, float]:
        """Modelled ns of the approximate paths: the ANN and the codes shortlist."""
        return {
            "ann": self.opts.ann_cost(ann_work),
            "codes": self._codes_cost(k, n_allowed, masked=masked),
        }

    def _codes_cost(self, k: int, n_allowed: int, *, masked: bool) -> float:
        """Modelled ns of a filtered search by the sign-bit codes (inf: not available)."""
        rows, o = self._rows, self.opts
        if rows.codes is None or n_allowed >= rows.live or n_allowed < o.codes_rows:
            return math.inf  # unfiltered: the graph is faster; few rows: exact is cheap
        scan = o.codes_ns * n_allowed + (o.mask_ns * rows.n if masked else 0.0)
        return o.codes_fixed_ns + scan + o.gather_ns * o.shortlist(k, n_allowed)

    def _plan_listed(
        self, k: int, listed: np.ndarray, ann_work: int
    ) -> tuple[str, np.ndarray | None]:
        """:meth:`_plan` for allowed rows already listed: scan them (in runs when they lie in
        long runs) or the ANN; a full scan with a mask never wins over gathering a list."""
        rows, o = self._rows, self.opts
        n_allowed = len(listed)
        if self._ann is None or rows.live < o.small:
            return "exact", listed
        costs = self._costs(k, n_allowed, ann_work, masked=False)
        ann_cost = min(costs.values())
        exact_cost = o.gather_ns * n_allowed
        if exact_cost > ann_cost >= o.scan_ns * n_allowed and _runs(listed) * RUN_MIN <= n_allowed:
            return "exact", listed  # long runs: scanned as matrix slices, near scan_ns a row
        return _cheapest(exact_cost, costs), listed

    def _ann_work(self, k: int, n_allowed: int) -> tuple[int, bool]:
        """(candidates the ANN path visits per result list, whether it filters in the graph):
        a filtered search walks the graph with a bitmap of the allowed rows when that needs a
        smaller efSearch than the over-fetch would fetch (see ``IndexOptions.filter_ef``)."""
        fetch = self._fetch_size(k, n_allowed)
        rows, o = self._rows, self.opts
        if n_allowed >= rows.live:
            return fetch, False
        sel = n_allowed / max(rows.n, 1)  # tombstones are walked through like disallowed rows
        if sel < o.filter_min or n_allowed < o.filter_rows:
            return fetch, False
        ef = o.filtered_ef(k, sel, rows.n)
        return (ef, True) if ef * o.filter_cost < fetch else (fetch, False)

    def _fetch_size(self, k: int, n_allowed: int) -> int:
        rows = self._rows
        per_result = float(self.opts.rerank)  # unfiltered: the graph's k best are exact
        if n_allowed < rows.live:
            per_result = max(per_result, self.opts.margin * rows.live / n_allowed)
        # the graph also returns tombstones: fetch that much more
        return min(rows.n, math.ceil(k * per_result * rows.n / max(rows.live, 1)))

    def _ann_search(
        self, q: Vector, k: int, mask: np.ndarray | None, n_allowed: int, work: tuple[int, bool]
    ) -> Hits | None:
        """ANN + post-filter + exact re-rank; None when too few candidates survive twice."""
        assert self._ann is not None
        rows = self._rows
        want = min(k, n_allowed)
        filtered = n_allowed < rows.live
        keep = rows.alive if mask is None else mask  # graph ids are rows; tombstones drop out
        ef, in_graph = work
        if in_graph and mask is not None:
            allowed = mask
            if len(allowed) < len(self._ann):  # rows appended to the graph since the mask
                allowed = np.pad(allowed, (0, len(self._ann) - len(allowed)))
            cand, scores = self._ann.search(q, k, ef=ef, allowed=allowed)
            if np.count_nonzero(cand >= 0) >= want:
                return Hits(rows.nums[cand[:want]], scores[:want], ef, "ann+filter")
        fetch = self._fetch_size(k, n_allowed)
        for _ in range(3):
            cand, scores = self._ann.search(q, fetch)  # exact scores, best first
            if mask is None and rows.dead == 0 and fetch == k and cand[-1] >= 0:
                return Hits(rows.nums[cand], scores, fetch, "ann")  # the common case
            ok = cand >= 0
            ok[ok] = keep[cand[ok]]
            if np.count_nonzero(ok) >= want:
                cand, scores = cand[ok][:k], scores[ok][:k]
                strategy = "ann+overfetch" if filtered else "ann"
                return Hits(rows.nums[cand], scores, fetch, strategy)
            if fetch >= rows.n:
                break
            fetch = min(rows.n, fetch * 4)
        return None

    def _codes_search(
        self,
        q: Vector,
        k: int,
        n_allowed: int,
        mask: np.ndarray | None,
        listed: np.ndarray | None,
    ) -> Hits:
        """The allowed rows' codes nearest the query's (Hamming), then their exact scores."""
        rows = self._rows
        assert rows.coder is not None
        assert rows.codes is not None
        count = self.opts.shortlist(k, n_allowed)
        codes, matrix = rows.codes[: rows.n], rows.vecs[: rows.n]
        found, scores = rows.coder.search(
            codes, matrix, q, count, min(k, count), mask=mask, rows=listed
        )
        return Hits(rows.nums[found], scores, count, "codes+rerank")

    def _exact(
        self,
        q: Vector,
        k: int,
        mask: np.ndarray | None,
        n_allowed: int,
        *,
        strategy: str,
        cand: np.ndarray | None = None,
    ) -> Hits:
        rows, o = self._rows, self.opts
        if cand is None and (mask is None or o.scan_ns * rows.n <= o.gather_ns * n_allowed):
            scores = self._scores(q, None)
            if mask is not None:
                scores[~mask] = -np.inf
            top = _top(scores, min(k, n_allowed))
            return Hits(rows.nums[top], scores[top], rows.n, strategy)
        if cand is None:
            assert mask is not None  # the full scan above took the unfiltered case
            cand = np.flatnonzero(mask)
        scores = self._scores(q, cand)
        top = _top(scores, k)
        return Hits(rows.nums[cand[top]], scores[top], len(cand), strategy)

    def _scores(self, q: Vector, cand: np.ndarray | None) -> np.ndarray:
        """Exact scores of some rows (all rows when ``cand`` is None): higher is better."""
        rows = self._rows
        dots: np.ndarray
        if cand is None:
            with _single_blas_thread:  # BLAS scans are where its threads matter (see the class)
                dots = rows.vecs[: rows.n] @ q
        elif len(cand) >= RUN_MIN * 8 and _runs(cand) * RUN_MIN <= len(cand):
            dots = np.empty(len(cand), dtype=np.float32)  # long runs: slices, no copy
            bounds = [0, *(np.flatnonzero(np.diff(cand) != 1) + 1).tolist(), len(cand)]
            with _single_blas_thread:
                for a, b in itertools.pairwise(bounds):
                    dots[a:b] = rows.vecs[cand[a] : cand[b - 1] + 1] @ q
        else:  # scattered rows: read in place, not gathered into a copy first
            dots = dots_by_index(rows.vecs, q, cand)
        if rows.sqnorm is None:
            return dots
        sq = rows.sqnorm[: rows.n] if cand is None else rows.sqnorm[cand]
        dist: np.ndarray = np.sqrt(np.maximum(sq - 2 * dots + float(q @ q), 0.0))
        return (-dist).astype(np.float32)

    # --- numbers --------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Sizes, journal position, timings and how often each strategy ran."""
        with self._lock:
            rows = self._rows
            ann_bytes = self._ann.graph_bytes() if self._ann is not None else 0
            return {
                "backend": self.name,
                "model": self.model.name,
                "dimension": self.dimension,
                "metric": self.model.metric,
                "vectors": rows.live,
                "tombstones": rows.dead,
                "ann": self._ann is not None,
                "memory_mb": round((rows.memory_bytes() + ann_bytes) / 2**20, 2),
                "ann_graph_mb": round(ann_bytes / 2**20, 2),
                "vectors_shared_with_ann": rows.owner_of_vecs is not None,
                "metadata_keys": sorted(rows.keys),  # mirrored: filters on them need no SQL
                "journal_seq": self._seq,
                "unsaved_changes": self._unsaved,
                "refresh_age_s": round(time.monotonic() - self._last_refresh, 3),
                "strategies": dict(self._strategies),
                **self._timings,
            }


class _SingleBlasThread:
    """Run numpy's BLAS on one thread while a search computes, then restore the setting.

    One query's matrix-vector products are memory-bound: a second BLAS thread gains little when
    idle and, with other work on the cores, made them 1.8x slower and erratic (measured: 5,000
    contiguous rows 167 us at 2 threads, 95 us at 1). Nested and concurrent searches share one
    counter, so the last one out restores what the application had set.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._libs: list[Any] | None = None
        self._saved: list[int] = []

    def _blas(self) -> list[Any]:
        if self._libs is None:
            try:  # untyped; imported by name so mypy needs no stub
                tpc = importlib.import_module("threadpoolctl")
            except ImportError:  # optional: without it BLAS keeps its own thread count
                self._libs = []
            else:
                blas = tpc.ThreadpoolController().select(user_api="blas")
                self._libs = list(blas.lib_controllers)
        return self._libs

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                libs = self._blas()
                self._saved = [lib.num_threads for lib in libs]
                for lib in libs:
                    lib.set_num_threads(1)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in zip(self._blas(), self._saved, strict=True):
                    lib.set_num_threads(n)


_single_blas_thread = _SingleBlasThread()


def _cheapest(exact_cost: float, costs: dict[str, float]) -> str:
    """'exact' unless an approximate path (``costs``) is cheaper; ties go to exact results."""
    best = min(costs, key=costs.__getitem__)
    return "exact" if exact_cost <= costs[best] else best


def _mask_runs(mask: np.ndarray) -> int:
    """How many runs of consecutive True a row mask has."""
    return int(np.count_nonzero(mask[1:] > mask[:-1])) + int(bool(len(mask) and mask[0]))


def _runs(cand: np.ndarray) -> int:
    """How many runs of consecutive rows a sorted row list has."""
    return int(np.count_nonzero(np.diff(cand) != 1)) + 1 if len(cand) else 0


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (ties keep the lower position first)."""
    if len(scores) > max(k, 64):
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return cast(np.ndarray, np.argsort(-scores, kind="stable")[:k])


def open_index(
    db: Database,
    model: str | ModelRow | None = None,
    kind: str = "memory",
    data_dir: Path | None = None,
    *,
    options: IndexOptions | None = None,
) -> VectorIndex:
    """Open the ``kind`` index of ``model`` (the active model when None), ready to search.

    ``memory`` keeps its snapshot under ``<data_dir>/<profile>.index/<model>/`` (``data_dir``
    defaults to the settings' data folder). ``libsql`` is
    ``autoforge_data.vector.libsql_index.LibsqlIndex(db, model)`` (the index lives in the database).
    """
    if kind not in BACKENDS:
        raise InvalidInput(f"unknown index backend {kind!r}", hint=f"one of {', '.join(BACKENDS)}")
    row = (
        model
        if isinstance(model, ModelRow)
        else (active_model(db) if model is None else get_model(db, model))
    )
    if kind == "exact":
        return ExactIndex(db, row, options=options).open()
    if kind == "libsql":
        try:
            backend = importlib.import_module("autoforge_data.vector.libsql_index")
        except ModuleNotFoundError:
            raise ConfigError("the libsql index backend is not installed") from None
        return cast(VectorIndex, backend.LibsqlIndex(db, row))
    from autoforge_data.vector.memory import MemoryIndex  # it builds on ExactIndex (below us)

    folder = index_dir(data_dir or db.settings.data_dir, db.settings.env, row)
    return MemoryIndex(db, row, folder=folder, options=options).open()
