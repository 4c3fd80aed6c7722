"""The ``libsql`` vector backend: libSQL's native DiskANN index (``libsql_vector_idx``).

The index lives in the database (shadow table ``idx_<table>_shadow``), so it is replicated,
backed up and branched with everything else, and an app server holds no vectors. It needs the
libSQL engine: an embedded file opened with the libSQL driver (``AFDB_DB_DRIVER=libsql``), a
remote sqld / Turso (our Hrana driver) or an embedded replica. Never stdlib ``sqlite3``: a file
with this index is unreadable to plain SQLite (the engine refuses to open it that way).

Facts this module is built on (DESIGN.md §2, ``bench/results/libsql_tuning.md``):

* ``vector_top_k(idx, q, k)`` returns rowids, at most ``search_l`` of them (an index option fixed
  at creation, default 200), whatever k is asked. The graph search visits ``search_l`` nodes
  whatever k is: 200 rows cost about what 10 do (3.5 vs 3.0 ms at 10k, the join included).
* Results are nondeterministic (random entry point): compare recall, never exact lists.
* Vectors are bound as raw little-endian float32 bytes (``vector32('[json]')`` is 27x slower).
* Options (384-d, 50k real MiniLM vectors): ``compress_neighbors=float8`` with
  ``max_neighbors=32`` against the defaults: 5x faster to build, 5x smaller, 2.4x the QPS,
  recall@10 0.9988 (see :func:`options_for`).
* Deleting rows leaves unreachable nodes when vectors repeat (libsql#2197): see
  :func:`guard_sql`. VACUUM duplicates libSQL's index registry row: see
  :func:`repair_vector_meta`.

The planner, per filtered query. N prompts, a filter matching m of them, k results wanted, L =
search_l; the ANN path needs m/N·L ≥ ``MARGIN``·k matches among its L candidates (MARGIN 1.8:
selectivity ≥ 9% at k=10, L=200) and m > ``EXACT_MAX`` (1,000; below that an exact scan of the
subset is as fast and exact):

* filters on indexed columns only (status, owner, created range since migration 0005, metadata
  keys given an expression index by :func:`ensure_metadata_index`): a COUNT that stops at that
  threshold (it reads only the index); below it, exact scan of the matching rows (read through
  the index);
* other filters (other metadata keys) have no index to count with: their
  selectivity on a random sample of 512 prompts decides; clearly below the threshold, exact
  scan (``json_extract`` over every prompt: ~20 ms at 50k, hence the expression indexes);
* otherwise ``vector_top_k`` over-fetches all L candidates (costs what asking for k does),
  joined to ``prompts`` and filtered; if fewer than k of them match (a filter correlated against
  the query, or a wrong estimate), the query falls back to the exact scan.

Measured at 50k real MiniLM vectors: bench/results/libsql_tuning.md ("Filtered search").
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError, InvalidInput
from autoforge_data.vector.base import Filter, Hits, Vector, check_query
from autoforge_data.vector.mirror import filter_conditions
from autoforge_data.vector.store import ModelRow

log = logging.getLogger(__name__)

DEFAULT_SEARCH_L = 200  # libSQL's default search_l
EXACT_MAX = 1_000  # at or below this many matching rows an exact scan is as fast, and exact
MARGIN = 1.8  # the ANN path wants MARGIN·k expected matches among its search_l candidates
COUNT_TTL = 5.0  # seconds the row counts and the prompt sample are cached for
SAMPLE = 512  # prompts sampled to estimate an unindexed filter's selectivity
SAMPLE_SLACK = 1.6  # below need/SLACK sampled matches a filter skips the ANN attempt
CREATED_INDEX = "ix_prompts_created_at"  # migration 0005

_TABLE = re.compile(r"^emb_[a-z0-9_]{1,56}$")
_OPTION = re.compile(
    r"^(compress_neighbors=(float1bit|float8|float16|floatb16|float32)"
    r"|max_neighbors=[1-9][0-9]{0,3}"
    r"|search_l=[1-9][0-9]{0,3}"
    r"|insert_l=[1-9][0-9]{0,3}"
    r"|alpha=[0-9](\.[0-9]{1,3})?)$"
)
_DDL_OPTION = re.compile(r"'([a-z_]+=[A-Za-z0-9.]+)'")


def options_for(dimension: int) -> tuple[str, ...]:
    """The tuned index options for a model dimension (bench/results/libsql_tuning.md).

    search_l stays at libSQL's 200: it does not change the build or the size, and 200
    candidates let filters down to 9% selectivity use the index (see the planner).

    * < 1,024-d (MiniLM, 384-d): float8-compressed neighbours, at most 32 of them. At 50k real
      vectors against the defaults: built in 146 s vs 734 s (5.0x), index 820 MB vs 4,097 MB
      (5.0x), 306 vs 125 QPS, recall@10 0.9988 vs 1.0. (max_neighbors=16 halves both again but
      recall@10 drops to 0.984 at 50k; float1bit at 384-d to 0.977.)
    * ≥ 1,024-d (OpenAI, 1,536-d): 1-bit neighbours, at most 32: a neighbour costs 192 bytes
      instead of 6 KB. 2k vectors (384-d real ones projected to 1,536-d): 10 s vs 89 s (8.9x),
      26 MB vs 642 MB (25x), recall@10 1.0 both.
    """
    if dimension >= 1024:
        return ("compress_neighbors=float1bit", "max_neighbors=32")
    return ("compress_neighbors=float8", "max_neighbors=32")


def index_name(table: str) -> str:
    """The vector index of an embeddings table: ``idx_<table>`` (validated)."""
    if not _TABLE.match(table):
        raise InvalidInput(f"invalid embeddings table {table!r}")
    return f"idx_{table}"


def _check_driver(db: Database) -> None:
    if db.driver not in ("libsql", "hrana"):
        raise ConfigError(
            f"the libsql vector index needs the libSQL engine, not {db.driver}",
            hint="set AFDB_DB_DRIVER=libsql (embedded files) or use a libSQL server",
        )


def _metric_sql(model: ModelRow) -> tuple[str, str]:
    """(index metric option, distance function) for a model's metric."""
    if model.metric == "cosine":
        return "metric=cosine", "vector_distance_cos"
    if model.metric == "l2":
        return "metric=l2", "vector_distance_l2"
    raise InvalidInput(f"unknown metric {model.metric!r}")


def index_ddl(model: ModelRow, options: Sequence[str] | None = None) -> str:
    """The CREATE INDEX statement for a model (options validated against a whitelist)."""
    opts = tuple(options_for(model.dimension) if options is None else options)
    for opt in opts:
        if not _OPTION.match(opt):
            raise InvalidInput(
                f"invalid vector index option {opt!r}",
                hint="compress_neighbors=float8|float1bit, max_neighbors=N, search_l=N, "
                "insert_l=N, alpha=X",
            )
    metric, _ = _metric_sql(model)
    quoted = ", ".join(f"'{o}'" for o in (metric, *opts))
    name = index_name(model.table)
    return (
        f"CREATE INDEX IF NOT EXISTS {name} ON {model.table} "
        f"(libsql_vector_idx(embedding, {quoted}))"
    )


def _prefix_index(table: str) -> str:
    return f"ix_{table}_vecprefix"


def guard_tables(table: str) -> tuple[str, str]:
    """(unlinked rows, deleted-vector prefixes): the duplicate guard's tables for a table.

    Named ``idx_<table>_*_shadow`` like libSQL's own index tables: they belong to the index
    (created, emptied and dropped with it) and schema comparisons skip ``*_shadow`` tables.
    """
    name = index_name(table)
    return f"{name}_unlinked_shadow", f"{name}_deleted_shadow"


def guard_sql(table: str) -> list[str]:
    """The duplicate-vector guard for libsql issue 2197 (DDL, idempotent).

    libSQL's DiskANN delete unlinks the deleted node only from its own out-neighbours; other
    nodes keep stale edges to it, and a node whose in-edges all came from it is left
    unreachable. Identical vectors are where this bites: a later copy is dominated by the
    earlier one (often only the earlier links to it), so deleting the earlier orphans it
    (#2197: most seeds with random 384-d vectors); and a stale edge to a deleted vector
    dominates a new row with that same vector, so a re-created row may never be linked (3 of
    20 re-created real MiniLM vectors at 3k rows). ``vector_top_k`` never returns such rows.

    Re-inserting them does not help (the stale edges dominate again), so the guard keeps a list
    of rows the graph may not reach and search scores that list exactly, next to the ANN:

    * an index on the vector's first 16 bytes finds a row's exact copies in O(log n);
    * a deleted (or re-embedded) row's vector prefix is remembered, and every row still
      holding that vector joins the unlinked list;
    * a new row whose vector prefix was deleted before joins the list too.

    Near-duplicates (not bit-identical) can also be orphaned by deletes; libSQL repairs none of
    that, so the ``exact`` and ``memory`` backends stay the reference for recall.
    """
    unlinked, deleted = guard_tables(table)
    key = "substr({v}.embedding, 1, 16)"
    copies = (
        f"INSERT OR IGNORE INTO {unlinked} (id) SELECT id FROM {table} "
        f"WHERE substr(embedding, 1, 16) = {key.format(v='OLD')} AND embedding = OLD.embedding"
    )
    tomb = f"INSERT OR IGNORE INTO {deleted} (prefix) VALUES ({key.format(v='OLD')})"
    reborn = (
        f"INSERT OR IGNORE INTO {unlinked} (id) SELECT NEW.id WHERE EXISTS "
        f"(SELECT 1 FROM {deleted} WHERE prefix = {key.format(v='NEW')})"
    )
    return [
        f"CREATE INDEX IF NOT EXISTS {_prefix_index(table)} ON {table} (substr(embedding, 1, 16))",
        f"CREATE TABLE IF NOT EXISTS {unlinked} (id INTEGER PRIMARY KEY)",
        f"CREATE TABLE IF NOT EXISTS {deleted} (prefix BLOB PRIMARY KEY) WITHOUT ROWID",
        f"CREATE TRIGGER IF NOT EXISTS trg_{table}_vecguard_insert AFTER INSERT ON {table} "
        f"BEGIN {reborn}; END",
        f"CREATE TRIGGER IF NOT EXISTS trg_{table}_vecguard_update AFTER UPDATE OF embedding ON "
        f"{table} WHEN OLD.embedding IS NOT NEW.embedding BEGIN {tomb}; {copies}; {reborn}; END",
        f"CREATE TRIGGER IF NOT EXISTS trg_{table}_vecguard_delete AFTER DELETE ON {table} "
        f"BEGIN DELETE FROM {unlinked} WHERE id = OLD.id; {tomb}; {copies}; END",
    ]


def _guard_drop_sql(table: str) -> list[str]:
    unlinked, deleted = guard_tables(table)
    return [
        *(
            f"DROP TRIGGER IF EXISTS trg_{table}_vecguard_{e}"
            for e in ("insert", "update", "delete")
        ),
        f"DROP TABLE IF EXISTS {unlinked}",
        f"DROP TABLE IF EXISTS {deleted}",
        f"DROP INDEX IF EXISTS {_prefix_index(table)}",
    ]


def ensure_index(db: Database, model: ModelRow, options: Sequence[str] | None = None) -> str:
    """Create the model's vector index and its duplicate guard if missing; returns its name.

    On a table that already holds vectors this builds the whole graph in one statement (about
    as long as inserting the rows with the index present: minutes for 50k vectors); a fresh
    graph has no stale edges, so the guard starts empty.
    """
    _check_driver(db)
    ddl = index_ddl(model, options)
    name = index_name(model.table)
    with UnitOfWork(db, write=True) as uow:
        exists = uow.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        )
        if exists is None:
            for sql in _guard_drop_sql(model.table):
                uow.execute(sql, (), kind="ddl")
        for sql in guard_sql(model.table):
            uow.execute(sql, (), kind="ddl")
        uow.execute(ddl, (), kind="ddl")
        uow.commit()
    return name


def drop_index(db: Database, model: ModelRow) -> None:
    """Drop the model's vector index (its shadow tables go with it) and the duplicate guard."""
    _check_driver(db)
    with UnitOfWork(db, write=True) as uow:
        uow.execute(f"DROP INDEX IF EXISTS {index_name(model.table)}", (), kind="ddl")
        for sql in _guard_drop_sql(model.table):
            uow.execute(sql, (), kind="ddl")
        uow.commit()


def repair_vector_meta(db: Database) -> int:
    """Undo what VACUUM does to libSQL's index registry; returns how many rows were removed.

    libSQL replays ``CREATE INDEX`` while VACUUM (and ``VACUUM INTO``) rebuilds the file, which
    inserts each index's parameters into ``libsql_vector_meta_shadow`` a second time next to the
    copied row: a WITHOUT ROWID table with a duplicate key, and ``PRAGMA integrity_check``
    reports "row not in PRIMARY KEY order for libsql_vector_meta_shadow" (libsql-experimental
    0.0.55; search keeps working). Run this after VACUUM and on every VACUUM INTO copy.
    Both also rebuild every vector index from its table (minutes at 50k vectors): prefer a file
    copy after a checkpoint, or Litestream, for backups.
    """
    _check_driver(db)
    with UnitOfWork(db, write=True) as uow:
        exists = uow.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            ("libsql_vector_meta_shadow",),
        )
        if exists is None:
            return 0
        rows = uow.fetchall("SELECT name, metadata FROM libsql_vector_meta_shadow")
        unique: dict[str, bytes] = {}
        for name, meta in rows:
            unique.setdefault(str(name), bytes(meta))
        if len(unique) == len(rows):
            return 0
        uow.execute("DELETE FROM libsql_vector_meta_shadow", (), kind="delete")
        uow.executemany(
            "INSERT INTO libsql_vector_meta_shadow (name, metadata) VALUES (?, ?)",
            list(unique.items()),
        )
        uow.commit()
    return len(rows) - len(unique)


def _indexed_only(
    flt: Filter, keys: frozenset[str] = frozenset(), *, created: bool = False
) -> bool:
    """True if every condition of the filter has a b-tree index on prompts (status, owner,
    metadata ``keys`` with an expression index, and the created range when ``created``: the
    index of migration 0005)."""
    ranged = flt.created_from is not None or flt.created_to is not None
    return (created or not ranged) and set(flt.metadata) <= keys


_META_INDEX_SQL = re.compile(r"json_extract\(metadata, '\$\.([A-Za-z_][A-Za-z0-9_]{0,63})'\)")


def metadata_index_name(key: str) -> str:
    """The expression index of one metadata key (keys differ in case, SQLite names do not)."""
    Filter(metadata={key: ""})  # validates the key: it is inlined in the DDL
    return f"ix_prompts_meta_{key.lower()}_{zlib.crc32(key.encode()):08x}"


def ensure_metadata_index(db: Database, key: str) -> str:
    """Index ``json_extract(metadata, '$.<key>')`` on prompts (idempotent); returns its name.

    For the libsql backend's hot metadata keys: a filter on the key then reads the matching
    prompts from the index instead of evaluating ``json_extract`` over every prompt (at 50k
    prompts, a 1% filter's exact scan went from ~20 ms to a few ms). The in-memory backends do
    not need it (they mirror the values). Costs one index entry per prompt and its upkeep on
    every prompt write; SQLAlchemy's schema reflection skips expression indexes, so
    ``afdb migrate --check`` does not report it as drift.
    """
    name = metadata_index_name(key)
    with UnitOfWork(db, write=True) as uow:
        uow.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON prompts (json_extract(metadata, '$.{key}'))",
            (),
            kind="ddl",
        )
        uow.commit()
    return name


def indexed_metadata_keys(db: Database) -> frozenset[str]:
    """Metadata keys with an expression index on prompts (see :func:`ensure_metadata_index`)."""
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'prompts' "
            "AND sql LIKE '%json_extract(metadata, %'"
        )
    return frozenset(m.group(1) for (sql,) in rows if (m := _META_INDEX_SQL.search(str(sql))))


def filter_sql(flt: Filter, alias: str = "p") -> tuple[str, list[Any]]:
    """A WHERE clause over ``prompts`` (aliased) for a filter (``1`` for none), and its
    parameters: :func:`~autoforge_data.vector.mirror.filter_conditions` AND-ed, so this
    backend reads a filter exactly as the others and the keyword search do."""
    parts, params = filter_conditions(flt, alias)
    return " AND ".join(parts) or "1", params


@dataclass(frozen=True, slots=True)
class _Totals:
    """Cached sizes: vectors, prompts, and a random sample of prompt rowids (JSON array)."""

    when: float
    vectors: int
    prompts: int
    sample: str
    sampled: int  # how many of the sampled rowids exist
    keys: frozenset[str]  # metadata keys with an expression index
    created: bool  # prompts.created_at has its index (migration 0005)


@dataclass(frozen=True, slots=True)
class _Query:
    """One search in flight: its unit of work, query blob, k and filter SQL."""

    uow: UnitOfWork
    blob: bytes
    k: int
    where: str | None
    params: list[Any]


class LibsqlIndex:
    """``VectorIndex`` over one model's vectors through libSQL's DiskANN index."""

    name = "libsql"

    def __init__(
        self,
        db: Database,
        model: ModelRow,
        *,
        options: Sequence[str] | None = None,
        create: bool = True,
        exact_max: int = EXACT_MAX,
        margin: float = MARGIN,
        strategy: Literal["auto", "exact", "ann"] = "auto",
        metadata_keys: Sequence[str] = (),
    ) -> None:
        """``strategy`` other than auto forces a path (benchmarks, tests, debugging): ``ann``
        over-fetches search_l candidates with no fallback (unless k > search_l).
        ``metadata_keys``: hot keys to give an expression index (with ``create``)."""
        _check_driver(db)
        if strategy not in ("auto", "exact", "ann"):
            raise InvalidInput(f"unknown strategy {strategy!r}", hint="auto, exact or ann")
        self.strategy = strategy
        self.db = db
        self.model = model
        self.table = model.table
        self.index = index_name(model.table)
        _, self._dist = _metric_sql(model)
        self.exact_max = exact_max
        self.margin = margin
        if create:
            ensure_index(db, model, options)
            for key in metadata_keys:
                ensure_metadata_index(db, key)
        self.options = self._read_options()
        self._unlinked = guard_tables(self.table)[0]
        self._check_guard()
        self.search_l = self._search_l(self.options)
        self._lock = threading.Lock()
        self._counts: _Totals | None = None
        self._rng = np.random.default_rng()
        self._strategies: Counter[str] = Counter()
        self._fallbacks = 0

    # ------------------------------------------------------------------ schema

    def _read_options(self) -> tuple[str, ...]:
        with UnitOfWork(self.db) as uow:
            row = uow.fetchone(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (self.index,)
            )
        if row is None:
            raise ConfigError(
                f"vector index {self.index} does not exist",
                hint="create it with LibsqlIndex(..., create=True) or `afdb index rebuild`",
            )
        return tuple(_DDL_OPTION.findall(str(row[0])))

    def _check_guard(self) -> None:
        with UnitOfWork(self.db) as uow:
            row = uow.fetchone(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self._unlinked,)
            )
        if row is None:
            raise ConfigError(
                f"vector index {self.index} has no duplicate guard",
                hint="open it once with LibsqlIndex(..., create=True) to add it",
            )

    @staticmethod
    def _search_l(options: Sequence[str]) -> int:
        for opt in options:
            if opt.startswith("search_l="):
                return int(opt.split("=", 1)[1])
        return DEFAULT_SEARCH_L

    # ------------------------------------------------------------------ counts

    def _totals(self) -> _Totals:
        """Row counts and a random sample of prompt rowids, cached for COUNT_TTL seconds."""
        now = time.monotonic()
        cached = self._counts
        if cached is not None and now - cached.when < COUNT_TTL:
            return cached
        with UnitOfWork(self.db) as uow:
            r = uow.fetchone(
                f"SELECT (SELECT count(*) FROM {self.table}), (SELECT count(*) FROM prompts), "
                "(SELECT coalesce(max(rowid), 0) FROM prompts)"
            )
            vectors, prompts, top = int(r[0]), int(r[1]), int(r[2])
            picks = self._rng.integers(1, top + 1, size=SAMPLE) if top else np.zeros(0)
            sample = json.dumps(sorted({int(x) for x in picks}))
            hit = uow.fetchone(
                "SELECT count(*) FROM prompts WHERE rowid IN (SELECT value FROM json_each(?))",
                (sample,),
            )
            created = uow.fetchone(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?",
                (CREATED_INDEX,),
            )
        keys = indexed_metadata_keys(self.db)
        totals = _Totals(now, vectors, prompts, sample, int(hit[0]), keys, bool(created[0]))
        self._counts = totals
        return totals

    def _sampled_selectivity(self, q: _Query, totals: _Totals) -> float:
        """The filter's selectivity on the random sample of prompts (about 0.3 ms)."""
        if totals.sampled == 0:
            return 1.0
        r = q.uow.fetchone(
            "SELECT count(*) FROM prompts p WHERE p.rowid IN (SELECT value FROM json_each(?)) "
            f"AND {q.where}",
            (totals.sample, *q.params),
        )
        return int(r[0]) / totals.sampled

    # ------------------------------------------------------------------ search

    def search(self, query: Vector, k: int, flt: Filter) -> Hits:
        """The k nearest vectors satisfying ``flt`` (see the module docstring for the planner)."""
        q = check_query(query, self.model.dimension, k)
        blob = q.astype("<f4", copy=False).tobytes()
        totals = self._totals()
        with UnitOfWork(self.db) as uow:
            if flt.empty:
                hits = self._unfiltered(_Query(uow, blob, k, None, []), totals.vectors)
            else:
                where, params = filter_sql(flt)
                query_ = _Query(uow, blob, k, where, params)
                indexed = _indexed_only(flt, totals.keys, created=totals.created)
                hits = self._filtered(query_, totals, indexed=indexed)
        with self._lock:
            self._strategies[hits.strategy] += 1
        return hits

    def _unfiltered(self, q: _Query, vectors: int) -> Hits:
        exact = vectors <= self.exact_max or q.k * self.margin > self.search_l
        if self.strategy != "auto":
            exact = self.strategy == "exact" or q.k > self.search_l
        return self._exact(q, vectors) if exact else self._ann(q, q.k)[0]

    def _filtered(self, q: _Query, totals: _Totals, *, indexed: bool) -> Hits:
        big_l, prompts = self.search_l, totals.prompts
        if self.strategy == "exact" or q.k > big_l or prompts <= self.exact_max:
            return self._exact(q, -1)
        if self.strategy == "ann":
            return self._ann(q, big_l)[0]
        # The ANN path needs m/N·L ≥ MARGIN·k (m prompts match of N); up to EXACT_MAX matches an
        # exact scan is as fast.
        need = max(self.exact_max + 1, math.ceil(self.margin * q.k * prompts / big_l))
        if indexed:  # status / owner: a count that stops at ``need`` reads only an index
            m = self._count_matching(q, need)
            if m < need:
                return self._exact(q, m)
        elif self._sampled_selectivity(q, totals) * prompts < need / SAMPLE_SLACK:
            # metadata / created range: counting would read the whole table; a sample of
            # prompts says whether this filter is clearly too selective for the ANN path
            return self._exact(q, -1)
        # Over-fetch all search_l candidates (the graph search visits search_l nodes whatever
        # k' is: asking for fewer saves nothing), then check that enough of them matched.
        hits, matched = self._ann(q, big_l)
        if matched < q.k:  # too selective near this query: be exact
            with self._lock:
                self._fallbacks += 1
            return self._exact(q, -1)
        return hits

    def _count_matching(self, q: _Query, cap: int) -> int:
        """How many prompts match the filter, counting at most ``cap``."""
        r = q.uow.fetchone(
            f"SELECT count(*) FROM (SELECT 1 FROM prompts p WHERE {q.where} LIMIT ?)",
            (*q.params, cap),
        )
        return int(r[0])

    def _scores(self, dists: np.ndarray) -> np.ndarray:
        if self.model.metric == "cosine":
            return (1.0 - dists).astype(np.float32)
        return (-dists).astype(np.float32)

    def _hits(self, rows: list[Any], k: int, scanned: int, strategy: str) -> Hits:
        rows = rows[:k]
        nums = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        dists = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        return Hits(nums, self._scores(dists), scanned, strategy)

    def _ann(self, q: _Query, k_fetch: int) -> tuple[Hits, int]:
        """vector_top_k(k_fetch) joined back, plus the guard's unlinked rows, filtered.

        CROSS JOIN fixes the loop order (candidates outside, one lookup each): with a plain JOIN
        SQLite may scan every prompt matching the filter once per candidate.
        """
        join, flt_params = "", []
        if q.where is not None:
            join = f" CROSS JOIN prompts p ON p.id = e.prompt_id WHERE {q.where}"
            flt_params = q.params
        rows = q.uow.fetchall(
            f"SELECT e.id, {self._dist}(e.embedding, ?) AS d "
            f"FROM vector_top_k('{self.index}', ?, ?) AS v "
            f"CROSS JOIN {self.table} e ON e.id = v.id{join} "
            f"UNION SELECT e.id, {self._dist}(e.embedding, ?) AS d FROM {self._unlinked} AS u "
            f"CROSS JOIN {self.table} e ON e.id = u.id{join} ORDER BY d, 1",
            (q.blob, q.blob, k_fetch, *flt_params, q.blob, *flt_params),
        )
        strategy = "ann" if q.where is None else "ann+overfetch"
        return self._hits(rows, q.k, k_fetch, strategy), len(rows)

    def _exact(self, q: _Query, scanned: int) -> Hits:
        """Exact scan: the whole table, or the rows matching the filter (``scanned`` < 0: count
        them in the same statement)."""
        if q.where is None:
            rows = q.uow.fetchall(
                f"SELECT id, {self._dist}(embedding, ?) AS d FROM {self.table} "
                "ORDER BY d, id LIMIT ?",
                (q.blob, q.k),
            )
            return self._hits(rows, q.k, scanned, "exact")
        counted = ", count(*) OVER ()" if scanned < 0 else ""
        rows = q.uow.fetchall(
            f"SELECT e.id, {self._dist}(e.embedding, ?) AS d{counted} FROM prompts p "
            f"JOIN {self.table} e ON e.prompt_id = p.id WHERE {q.where} ORDER BY d, e.id LIMIT ?",
            (q.blob, *q.params, q.k),
        )
        if scanned < 0:
            scanned = int(rows[0][2]) if rows else 0
        return self._hits(rows, q.k, scanned, "exact-subset")

    # ------------------------------------------------------------------ protocol

    def refresh(self) -> int:
        """Nothing to apply: the index is updated by the database in the writer's transaction."""
        return 0

    def stats(self) -> dict[str, object]:
        """Options, row count, on-disk size of the index, and how queries were planned."""
        with UnitOfWork(self.db) as uow:
            rows = int(uow.fetchone(f"SELECT count(*) FROM {self.table}")[0])
            unlinked_table, deleted_table = guard_tables(self.table)
            unlinked = int(uow.fetchone(f"SELECT count(*) FROM {unlinked_table}")[0])
            deleted = int(uow.fetchone(f"SELECT count(*) FROM {deleted_table}")[0])
            page_size = int(uow.fetchone("PRAGMA page_size")[0])
            page_count = int(uow.fetchone("PRAGMA page_count")[0])
            index_bytes, method = self._index_bytes(uow, page_size, dbstat=True)
        with self._lock:
            strategies = dict(self._strategies)
            fallbacks = self._fallbacks
        return {
            "backend": self.name,
            "model": self.model.name,
            "dimension": self.model.dimension,
            "table": self.table,
            "index": self.index,
            "options": list(self.options),
            "search_l": self.search_l,
            "rows": rows,
            "index_bytes": index_bytes,
            "index_mb": round(index_bytes / 1e6, 1),
            "size_method": method,
            "database_bytes": page_size * page_count,
            "unlinked_rows": unlinked,
            "deleted_vectors": deleted,
            "strategies": strategies,
            "fallbacks": fallbacks,
            "exact_max": self.exact_max,
            "margin": self.margin,
        }

    def index_size(self, *, dbstat: bool = True) -> tuple[int, str]:
        """On-disk bytes of the index's shadow tables and how they were measured."""
        with UnitOfWork(self.db) as uow:
            page_size = int(uow.fetchone("PRAGMA page_size")[0])
            return self._index_bytes(uow, page_size, dbstat=dbstat)

    def _index_bytes(self, uow: UnitOfWork, page_size: int, *, dbstat: bool) -> tuple[int, str]:
        shadow = (f"{self.index}_shadow", f"{self.index}_shadow_idx")
        if dbstat:
            try:
                r = uow.fetchone(
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN (?, ?)", shadow
                )
                return int(r[0]), "dbstat"
            except Exception as exc:  # no dbstat in this build: estimate below
                log.debug("dbstat unavailable (%s); estimating the index size", exc)
        r = uow.fetchone(f"SELECT count(*), coalesce(sum(length(data)), 0) FROM {shadow[0]}")
        # one row per node: its blob rounded up to whole pages (overflow chain), plus its
        # entries in the table's and the index_key b-trees
        nodes = int(r[0])
        per = math.ceil(int(r[1]) / max(nodes, 1) / page_size) * page_size
        return nodes * (per + 48), "estimate"

    def close(self) -> None:
        """Nothing held: the database owns the index."""
