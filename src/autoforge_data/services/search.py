"""Search use cases: vector, keyword and hybrid search over prompts, and the indexing pipeline.

* :func:`search` — ``mode="vector"`` asks the vector index (filter-correct ANN or exact);
  ``"keyword"`` asks FTS5 for any of the query's words (stopwords dropped; each word quoted, so
  no input is an FTS5 syntax error), most words matched first, then bm25; ``"hybrid"`` fuses the
  vector ranking with the keyword hits that contain at least half the query's words, by
  reciprocal rank fusion (k = 60). Without that floor a prompt sharing one common word with the
  query lands in both lists and outranks the best semantic match (measured on the test corpus).
  Every result is re-checked against the filter in SQL, so a prompt changed a moment ago by
  another process is never returned against the filter.
* :func:`index_prompts` — embeds prompts whose text changed (content hash per model) in one unit
  of work, then refreshes the index: a process sees its own writes at once.
* :func:`reindex` — backfills every stale prompt of a model in committed batches: kill it and run
  it again, it continues where it stopped and embeds nothing twice.

Caching (a :class:`SearchContext` made with ``cache=``; the policy is
:func:`autoforge_data.services.caching.cache_policy`, measured in ``bench/cache.py``):

* **Query embeddings**: the in-process LRU (:class:`CachedEmbedder`) first, then the cache (its
  own L1, then Redis, shared by every process: :class:`CacheAsideEmbedder`), then the model.
* **Search results**, keyed by (database, model, version, query text or vector hash, k,
  filter, mode). The version is the database's *data version* read per search (embedded and
  replica: one local read), or in remote mode with Redis the *search generation* (dropped after
  commit by every writer of prompts or vectors) plus the data version polled every
  ``freshness_interval`` seconds (for writers that do not use the cache). A committed change
  therefore changes the key; a miss applies the index's journal before computing, so what it
  stores is at least as new as its key. If that refresh fails, the result is returned but not
  stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import AfdbError, ConfigError, InvalidInput, NotFound
from autoforge_data.ids import is_id
from autoforge_data.services import caching
from autoforge_data.settings import Settings
from autoforge_data.vector.base import MAX_K, Filter, Match, Vector, VectorIndex, check_query
from autoforge_data.vector.embedders import (
    KNOWN_MODELS,
    CachedEmbedder,
    Embedder,
    FloatArray,
    Metric,
    check_texts,
    content_hash,
    make_embedder,
)
from autoforge_data.vector.index import IndexOptions, open_index
from autoforge_data.vector.mirror import (
    created_bounds,
    filter_sql,
    stale_count,
    stored_vectors,
    stored_versions,
)
from autoforge_data.vector.store import ModelRow, VectorStore, active_model, get_model

if TYPE_CHECKING:
    from autoforge_data.cache import CacheAside, Codec

MODES = ("vector", "keyword", "hybrid")
_NO_FILTER = Filter()  # frozen; searches without a filter share it
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al.): 1 / (60 + rank)
SNIPPET_CHARS = 160
MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 16
HYBRID_MIN_MATCH = 0.5  # a keyword hit counts in hybrid fusion if it has half the query's words
_WORD = re.compile(r"\w+")
# Words too common to be evidence of a keyword match (dropped unless a query has nothing else).
_STOPWORD_TEXT = """
    a about an and are as at be but by can could do does for from had has have how i if in into
    is it its me my no not of on or our so than that the their them then there these they this
    to up us was we were what when where which while who why will with would you your
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_SPACE = re.compile(r"\s+")
Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


class CacheAsideEmbedder:
    """An Embedder whose query vectors go through the cache (its L1, then Redis): a query that
    one process embedded is a hit for every other. Stored as base64 little-endian float32."""

    def __init__(self, inner: Embedder, cache: CacheAside) -> None:
        from autoforge_data.cache import Codec

        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.dimension = inner.dimension
        self.metric: Metric = inner.metric
        self.normalized = inner.normalized
        self._codec: Codec[FloatArray] = Codec(_dump_vector, self._load_vector)

    def __repr__(self) -> str:
        return f"CacheAsideEmbedder({self.inner!r})"

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Each text's vector from the cache, or from the inner embedder (then cached)."""
        items = check_texts(texts)
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        for row, text in enumerate(items):
            parts = [self.name, str(self.dimension), content_hash(text, self.name)]
            try:
                out[row] = self.cache.get_or_load(
                    caching.QUERY_EMBEDDING,
                    parts,
                    lambda t=text: self.inner.embed([t])[0],  # type: ignore[misc]
                    caching.EMBEDDING_TTL,
                    codec=self._codec,
                )
            except _BadVector:  # a damaged or foreign value under our key: compute it
                out[row] = self.inner.embed([text])[0]
        return out

    def _load_vector(self, value: Any) -> FloatArray:
        try:
            vector = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
        except (TypeError, ValueError):
            raise _BadVector from None
        if vector.shape != (self.dimension,):
            raise _BadVector
        return vector.astype(np.float32, copy=False)


class _BadVector(Exception):
    """A cached query vector that does not decode to this model's dimension."""


def _dump_vector(vector: FloatArray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


class _Poller:
    """The data version, read again when older than ``interval`` seconds (one reader at a time;
    the others keep using the previous value meanwhile)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._value = ""
        self._at = -math.inf
        self._lock = threading.Lock()

    def version(self, db: Database) -> str:
        if time.monotonic() - self._at >= self.interval and self._lock.acquire(
            blocking=not self._value
        ):
            try:
                started = time.monotonic()
                if started - self._at >= self.interval:
                    self._value = caching.data_version(db)
                    self._at = started
            finally:
                self._lock.release()
        return self._value


@dataclass
class SearchContext:
    """What a search needs: the database, the model, its embedder and the open vector index.

    With ``cache``, query embeddings and search results are cached as the deployment mode's
    policy says (see the module docstring); ``freshness_interval`` bounds how long a write made
    without the cache (another tool) can go unseen by generation-keyed results.
    """

    db: Database
    model: ModelRow
    index: VectorIndex
    embedder: Embedder | None  # None when the model is not one we can run (vector queries only)
    query_embedder: Embedder | None = None  # the embedder behind an LRU of query vectors
    owns_db: bool = field(default=False, repr=False)
    cache: CacheAside | None = field(default=None, repr=False)
    freshness_interval: float = caching.FRESHNESS_INTERVAL
    policy: caching.CachePolicy | None = field(default=None, init=False)
    _poller: _Poller = field(init=False, repr=False)
    _probe: caching.DataVersionProbe | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.cache is not None:
            self.policy = caching.cache_policy(self.db, self.cache)
        self._poller = _Poller(self.freshness_interval)
        if self.embedder is not None:
            _check_embedder(self.embedder, self.model)
            if self.query_embedder is None:
                inner = self.embedder
                if self.cache is not None and self.policy is not None and self.policy.embeddings:
                    inner = CacheAsideEmbedder(self.embedder, self.cache)
                self.query_embedder = CachedEmbedder(inner, max_entries=4_096)

    @classmethod
    def open(
        cls,
        db: Database,
        *,
        model: str | None = None,
        kind: str = "memory",
        data_dir: Path | None = None,
        embedder: Embedder | None = None,
        options: IndexOptions | None = None,
        cache: CacheAside | None = None,
        freshness_interval: float = caching.FRESHNESS_INTERVAL,
    ) -> SearchContext:
        """Open the index of ``model`` (the registry's active model when None) and its embedder."""
        row = active_model(db) if model is None else get_model(db, model)
        if embedder is None and row.name in KNOWN_MODELS:
            embedder = make_embedder(row.name, db.settings)
        index = open_index(db, row, kind, data_dir, options=options)
        return cls(db, row, index, embedder, cache=cache, freshness_interval=freshness_interval)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, kind: str = "memory", cache: CacheAside | None = None
    ) -> SearchContext:
        """Open the database of ``settings`` and a context over it (closed with the context)."""
        db = Database(settings)
        try:
            ctx = cls.open(db, kind=kind, cache=cache)
        except BaseException:
            db.close()
            raise
        ctx.owns_db = True
        return ctx

    def close(self) -> None:
        """Close the index (saving its snapshot) and, if this context opened it, the database."""
        if self._probe is not None:
            self._probe.close()
        self.index.close()
        if self.owns_db:
            self.db.close()

    def __enter__(self) -> SearchContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_embedder(embedder: Embedder, model: ModelRow) -> None:
    if embedder.dimension != model.dimension:
        raise ConfigError(
            f"embedder {embedder.name!r} makes {embedder.dimension}-d vectors, "
            f"model {model.name!r} has {model.dimension}",
            hint="use the embedder of the model the index was built for",
        )


# --- search ---------------------------------------------------------------------------------------


def search(
    ctx: SearchContext,
    query: str | None = None,
    *,
    vector: Vector | Sequence[float] | None = None,
    k: int = 10,
    flt: Filter | None = None,
    mode: str = "hybrid",
) -> list[Match]:
    """The k best prompts for a text ``query`` or a ``vector``, allowed by ``flt``.

    With a vector there is no text to match words against, so ``hybrid`` is vector search.
    A context with a cache serves a repeated search from it (see the module docstring).
    """
    flt = _check_request(query, vector, k, flt, mode)
    if vector is not None:
        if mode == "keyword":
            raise InvalidInput("keyword search needs query text", hint="pass query=, not vector=")
        try:
            raw = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInput("the query vector must be a list of numbers") from None
        q = check_query(raw, ctx.model.dimension, k)
        what = "v:" + hashlib.sha256(q.tobytes()).hexdigest()
        return _cached(ctx, what, lambda: _vector(ctx, q, k, flt), k=k, flt=flt, mode="vector")
    text: str = query  # type: ignore[assignment]  # _check_request: exactly one of the two
    run: Callable[[], list[Match]]
    if mode == "keyword":
        run = lambda: _keyword(ctx.db, text, k, flt)  # noqa: E731
    else:
        _embedder_of(ctx)  # no embedder is an error before any work
        if mode == "vector":
            run = lambda: _vector(ctx, _embed_query(ctx, text), k, flt)  # noqa: E731
        else:
            run = lambda: _hybrid(ctx, text, _embed_query(ctx, text), k, flt)  # noqa: E731
    return _cached(ctx, "t:" + text, run, k=k, flt=flt, mode=mode)


class _Uncached(Exception):
    """Carries a result out of the cache's loader so that it is returned but not stored."""

    def __init__(self, matches: list[Match]) -> None:
        super().__init__()
        self.matches = matches


def _cached(
    ctx: SearchContext,
    what: str,
    run: Callable[[], list[Match]],
    *,
    k: int,
    flt: Filter,
    mode: str,
) -> list[Match]:
    """``run()``'s matches through the cache when the context's policy caches search results."""
    cache, policy = ctx.cache, ctx.policy
    if cache is None or policy is None or not policy.search:
        return run()
    if policy.search_key == "generation":
        gen = caching.generation(cache, caching.SEARCH_GEN, caching.SEARCH_GEN_PARTS)
        version = f"g{gen}:{ctx._poller.version(ctx.db)}"
    else:
        if ctx._probe is None:
            ctx._probe = caching.DataVersionProbe(ctx.db)
        version = "d" + ctx._probe.version()
    # k is digits and mode a word: "k:mode:filter" is unambiguous (fewer parts, a faster key)
    parts = [caching.database_key(ctx.db), ctx.model.name, version, what]
    parts.append(f"{k}:{mode}:{_filter_key(flt)}")

    def load() -> list[Match]:
        # The index may lag behind the version in the key (other processes' commits reach it
        # on its timed refresh): apply the journal first, or an old answer would be stored
        # under a new key.
        try:
            ctx.index.refresh()
        except AfdbError as exc:
            log.warning("index refresh before a cached search failed: %s", exc.one_line())
            raise _Uncached(run()) from None
        return run()

    try:
        return cache.get_or_load(caching.SEARCH, parts, load, codec=_matches_codec())
    except _Uncached as uncached:  # callers that shared this load get their own list
        return list(uncached.matches)


def _filter_key(flt: Filter) -> str:
    if flt.empty:
        return ""
    status = list(flt.status) if flt.status is not None else None
    parts = [status, flt.owner_id, flt.created_from, flt.created_to, flt.metadata]
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


_MATCHES: list[Any] = []
# An L1 hit hands out the same decoded value every time: its Match objects are made once and
# shared (they are frozen); each caller gets a list of its own. Bounded; an L2 hit decodes anew.
_DECODED: dict[int, tuple[Any, tuple[Match, ...]]] = {}
_DECODED_MAX = 1024


def _matches_codec() -> Codec[list[Match]]:
    if not _MATCHES:
        from autoforge_data.cache import Codec

        def dump(matches: list[Match]) -> list[list[Any]]:
            return [[m.prompt_id, m.version, m.score, m.snippet] for m in matches]

        def load(rows: list[list[Any]]) -> list[Match]:
            known = _DECODED.get(id(rows))
            if known is not None and known[0] is rows:
                return list(known[1])
            matches = tuple(Match(r[0], r[1], r[2], r[3]) for r in rows)
            if len(_DECODED) >= _DECODED_MAX:
                _DECODED.clear()
            _DECODED[id(rows)] = (rows, matches)  # holds rows: its id is not reused meanwhile
            return list(matches)

        _MATCHES.append(Codec(dump, load))
    codec: Codec[list[Match]] = _MATCHES[0]
    return codec


def _check_request(
    query: str | None,
    vector: object,
    k: int,
    flt: Filter | None,
    mode: str,
) -> Filter:
    """Every argument checked before any work; returns the filter to use."""
    if mode not in MODES:
        raise InvalidInput(f"unknown search mode {mode!r}", hint="vector, keyword or hybrid")
    if (query is None) == (vector is None):
        raise InvalidInput("give either a query text or a vector, not both or neither")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("the search query is empty", hint="type some words to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInput(f"the search query is longer than {MAX_QUERY_CHARS} characters")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    flt = flt if flt is not None else _NO_FILTER
    if not isinstance(flt, Filter):
        raise InvalidInput("flt must be a Filter")
    created_bounds(flt)
    return flt


def _embedder_of(ctx: SearchContext) -> Embedder:
    if ctx.query_embedder is None:
        raise ConfigError(
            f"no embedder for model {ctx.model.name!r}: only vector queries are possible",
            hint="search with vector=, or activate a model this package can run",
        )
    return ctx.query_embedder


def _embed_query(ctx: SearchContext, query: str) -> Vector:
    vector: Vector = _embedder_of(ctx).embed([query])[0]
    return vector


def _vector(ctx: SearchContext, q: Vector, k: int, flt: Filter) -> list[Match]:
    hits = ctx.index.search(q, k, flt)
    ranked = [(int(n), float(s)) for n, s in zip(hits.nums, hits.scores, strict=True)]
    return _resolve(ctx.db, ranked, flt, {})


def _hybrid(ctx: SearchContext, query: str, q: Vector, k: int, flt: Filter) -> list[Match]:
    depth = min(MAX_K, max(50, 3 * k))
    hits = ctx.index.search(q, depth, flt)
    # Only prompts with at least half the query's words are lexical evidence: with plain OR, one
    # shared word would put a prompt into both lists and above the best semantic match.
    terms = query_terms(query)
    with UnitOfWork(ctx.db) as uow:
        keyword = _keyword_ranked(uow, terms, depth, flt, min_match=HYBRID_MIN_MATCH)
        fused: dict[int, float] = {}
        # Ties (a prompt at the same rank in one list only) keep the vector ranking's order.
        for ranking in (hits.nums.tolist(), [num for num, _ in keyword]):
            for rank, num in enumerate(ranking, start=1):
                fused[num] = fused.get(num, 0.0) + 1.0 / (RRF_K + rank)
        best = sorted(fused.items(), key=lambda item: -item[1])[:k]
        lexical = {num for num, _ in keyword}
        snippets = _snippets(uow, terms, [num for num, _ in best if num in lexical])
    return _resolve(ctx.db, best, flt, snippets)


def query_terms(text: str) -> list[str]:
    """The words a keyword search looks for: runs of letters and digits, stopwords dropped."""
    words = list(dict.fromkeys(_WORD.findall(text.casefold())))
    kept = [w for w in words if w not in STOPWORDS] or words
    return kept[:MAX_QUERY_TERMS]


def fts_query(terms: Sequence[str]) -> str | None:
    """An FTS5 query matching any of ``terms``, each quoted (None without terms).

    Terms are runs of letters and digits wrapped in double quotes, so FTS5 operators (AND, OR,
    NOT, NEAR), quotes, ``*``, ``-``, ``^`` and column filters in the user's text are plain words
    or dropped: no input raises a syntax error or changes the query's shape.
    """
    return " OR ".join(f'"{t}"' for t in terms) or None


def _keyword(db: Database, query: str, limit: int, flt: Filter) -> list[Match]:
    """Keyword search: FTS5 hits, most query words first, then bm25 (title weighs double).

    A match's score is the number of query words it contains plus bm25 / (1 + bm25), so it
    orders like the list.
    """
    terms = query_terms(query)
    with UnitOfWork(db) as uow:
        ranked = _keyword_ranked(uow, terms, limit, flt)
        snippets = _snippets(uow, terms, [num for num, _ in ranked])
    return _resolve(db, ranked, flt, snippets)


def _keyword_ranked(
    uow: UnitOfWork, terms: list[str], limit: int, flt: Filter, *, min_match: float = 0.0
) -> list[tuple[int, float]]:
    """(num, score) of the best FTS5 hits, best first (see :func:`_keyword`); ``min_match``
    drops hits with fewer than that share of the words.

    bm25 ranks every row containing any of the words, so that statement reads nothing else: the
    prompts are joined only when a filter must hold before the LIMIT, and snippets are made
    later for the rows shown (at 50k prompts and 16 words, joining and snippeting every hit
    cost as much as ranking them).
    """
    match = fts_query(terms)
    if match is None:
        return []
    where, params = filter_sql(flt)
    fetch = max(limit, 50)
    if where:
        rows = uow.fetchall(
            "SELECT f.rowid, -bm25(prompts_fts, 2.0, 1.0) AS relevance FROM prompts_fts f "
            "JOIN prompt_keys k ON k.num = f.rowid JOIN prompts p ON p.id = k.prompt_id "
            f"WHERE prompts_fts MATCH ?{where} ORDER BY relevance DESC LIMIT ?",
            (match, *params, fetch),
        )
    else:
        rows = uow.fetchall(
            "SELECT rowid, -bm25(prompts_fts, 2.0, 1.0) AS relevance FROM prompts_fts "
            "WHERE prompts_fts MATCH ? ORDER BY relevance DESC LIMIT ?",
            (match, fetch),
        )
    covered = _coverage(uow, terms, [int(r[0]) for r in rows])
    need = math.ceil(len(terms) * min_match)
    scored = []
    for r in rows:
        num, relevance = int(r[0]), max(float(r[1]), 0.0)
        if covered[num] >= need:
            scored.append((num, covered[num] + relevance / (1.0 + relevance)))
    scored.sort(key=lambda item: -item[1])  # stable: equal scores keep the bm25 order
    return scored[:limit]


def _snippets(uow: UnitOfWork, terms: list[str], nums: list[int]) -> dict[int, str]:
    """FTS5 snippets (matched words in ``**``) of the given rows, by num."""
    match = fts_query(terms)
    if match is None or not nums:
        return {}
    rows = uow.fetchall(
        "SELECT rowid, snippet(prompts_fts, -1, '**', '**', '…', 24) FROM prompts_fts "
        f"WHERE prompts_fts MATCH ? AND +rowid IN ({','.join('?' * len(nums))})",  # see _coverage
        (match, *nums),
    )
    return {int(num): _clean(str(text)) for num, text in rows}


def _coverage(uow: UnitOfWork, terms: list[str], nums: list[int]) -> dict[int, int]:
    """How many of ``terms`` each FTS row contains (one query: a UNION ALL per term).

    ``+rowid`` keeps the row list out of FTS5's index: each term's doclist is read once, in
    order, and checked against the list (an ephemeral set), instead of one doclist seek per row
    and term (at 50k prompts, 16 words and 50 rows: 4 ms instead of 24). A doclist read costs at
    most what the ranking that found the rows already paid for it.
    """
    if len(terms) == 1 or not nums:
        return dict.fromkeys(nums, 1)
    marks = ",".join("?" * len(nums))
    part = f"SELECT rowid FROM prompts_fts WHERE prompts_fts MATCH ? AND +rowid IN ({marks})"
    params: list[object] = []
    for term in terms:
        params += [f'"{term}"', *nums]
    counts = dict.fromkeys(nums, 0)
    for (num,) in uow.fetchall(" UNION ALL ".join([part] * len(terms)), tuple(params)):
        counts[int(num)] += 1
    return counts


def _resolve(
    db: Database, ranked: list[tuple[int, float]], flt: Filter, snippets: dict[int, str]
) -> list[Match]:
    """Matches for (num, score) pairs, in order; prompts gone or no longer allowed are dropped."""
    if not ranked:
        return []
    nums = [num for num, _ in ranked]
    where, params = filter_sql(flt)
    with UnitOfWork(db) as uow:
        rows = uow.fetchall(
            "SELECT k.num, p.id, p.current_version, substr(p.content, 1, ?) "
            "FROM prompt_keys k JOIN prompts p ON p.id = k.prompt_id "
            f"WHERE k.num IN ({','.join('?' * len(nums))}){where}",
            (SNIPPET_CHARS * 2, *nums, *params),
        )
    found = {int(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in rows}
    out = []
    for num, score in ranked:
        if num in found:
            pid, version, head = found[num]
            out.append(Match(pid, version, score, snippets.get(num) or _head(head)))
    return out


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _head(text: str) -> str:
    """The first ~160 characters of a text, cut at a word boundary."""
    text = _clean(text)
    if len(text) <= SNIPPET_CHARS:
        return text
    cut = text[:SNIPPET_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > SNIPPET_CHARS // 2 else cut).rstrip() + "…"


# --- indexing -------------------------------------------------------------------------------------


@dataclass
class IndexReport:
    """What an indexing run did."""

    embedded: int = 0  # texts sent to the embedder
    reused: int = 0  # same text under a new version number: the stored vector was kept
    unchanged: int = 0  # already indexed at this version
    skipped: int = 0  # edited again while we embedded: the next run takes them
    batches: int = 0
    total: int = 0  # stale prompts when a reindex started

    def add(self, other: IndexReport) -> None:
        """Add another report's counts to this one."""
        for name in ("embedded", "reused", "unchanged", "skipped", "batches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def index_prompts(ctx: SearchContext, prompt_ids: Sequence[str]) -> IndexReport:
    """Embed the prompts whose text changed since their vector was stored; one unit of work."""
    if ctx.embedder is None:
        raise ConfigError(f"no embedder for model {ctx.model.name!r}")
    ids = list(dict.fromkeys(prompt_ids))
    for pid in ids:
        if not isinstance(pid, str) or not is_id(pid):
            raise InvalidInput(f"invalid prompt id {pid!r}", hint="ids are 26-character strings")
    if not ids:
        return IndexReport()
    with UnitOfWork(ctx.db) as uow:
        rows = uow.fetchall(
            "SELECT id, current_version, title || char(10) || content FROM prompts "
            f"WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id",
            tuple(ids),
        )
    if len(rows) != len(ids):
        missing = sorted(set(ids) - {str(r[0]) for r in rows})
        raise NotFound(f"prompt {missing[0]} not found")
    items = [(str(r[0]), int(r[1]), str(r[2])) for r in rows]
    return _index_batch(
        ctx.db, ctx.model, ctx.embedder, items, _refresher(ctx.index), cache=ctx.cache
    )


def reindex(
    db: Database,
    model: str | None = None,
    *,
    embedder: Embedder | None = None,
    batch: int = 256,
    progress: Progress | None = None,
    index: VectorIndex | None = None,
    cache: CacheAside | None = None,
) -> IndexReport:
    """Embed every prompt whose vector of ``model`` is missing or stale, batch by batch.

    Each batch is committed before ``progress(done, total)`` is called, so an interrupted run
    loses nothing and a rerun continues with what is still stale. ``index`` (of the same model)
    is refreshed after each batch; with ``cache``, each batch drops the search generation after
    its commit (when the policy keys search results by it).
    """
    row = active_model(db) if model is None else get_model(db, model)
    if not isinstance(batch, int) or not 1 <= batch <= 10_000:
        raise InvalidInput("batch must be between 1 and 10000")
    if embedder is None:
        embedder = make_embedder(row.name, db.settings)
    _check_embedder(embedder, row)
    store = VectorStore(row)
    on_commit = _refresher(index) if index is not None else None
    report = IndexReport(total=stale_count(db, row))
    done, after = 0, ""
    while items := store.stale(db, batch, after):
        report.add(_index_batch(db, row, embedder, items, on_commit, cache=cache))
        done += len(items)
        after = items[-1][0]
        if progress is not None:
            progress(done, report.total)
    return report


def _refresher(index: VectorIndex) -> Callable[[], None]:
    """An after-commit callback that shows the commit to ``index`` at once.

    It runs after COMMIT returned, so a failure must not look like a failed write: it is logged,
    and the index's timed journal check applies the change within a second anyway.
    """

    def refresh() -> None:
        try:
            index.refresh()
        except AfdbError as exc:
            log.warning("index refresh after commit failed: %s", exc.one_line())

    return refresh


def _index_batch(
    db: Database,
    model: ModelRow,
    embedder: Embedder,
    items: list[tuple[str, int, str]],
    on_commit: Callable[[], Any] | None,
    *,
    cache: CacheAside | None = None,
) -> IndexReport:
    """Embed what changed among (prompt id, version, text) and upsert it in one transaction."""
    report = IndexReport(batches=1)
    stored = stored_versions(db, model, [pid for pid, _, _ in items])
    embed: list[tuple[str, int, str, str]] = []
    reuse: list[tuple[str, int, str]] = []
    for pid, version, text in items:
        digest = content_hash(text, model.name)
        old = stored.get(pid)
        if old is None or old[1] != digest:
            embed.append((pid, version, digest, text))
        elif old[0] != version:
            reuse.append((pid, version, digest))
        else:
            report.unchanged += 1
    rows: list[tuple[str, int, str, np.ndarray]] = []
    if embed:
        vectors = embedder.embed([text for *_, text in embed])
        rows += [(p, v, h, vec) for (p, v, h, _), vec in zip(embed, vectors, strict=True)]
    if reuse:
        kept = stored_vectors(db, model, [pid for pid, _, _ in reuse])
        rows += [(p, v, h, kept[p]) for p, v, h in reuse if p in kept]
    if rows:
        report.skipped = _write(db, model, rows, on_commit, cache)
    report.embedded, report.reused = len(embed), len(reuse)
    return report


def _write(
    db: Database,
    model: ModelRow,
    rows: list[tuple[str, int, str, np.ndarray]],
    on_commit: Callable[[], Any] | None,
    cache: CacheAside | None = None,
) -> int:
    """Upsert vectors whose prompt is still at the embedded version; returns how many were not."""
    ids = [r[0] for r in rows]
    with UnitOfWork(db, write=True) as uow:
        current = {
            str(r[0]): int(r[1])
            for r in uow.fetchall(
                f"SELECT id, current_version FROM prompts WHERE id IN ({','.join('?' * len(ids))})",
                tuple(ids),
            )
        }
        # A prompt edited (or deleted) while we embedded keeps its newer state; the edit's own
        # indexing, or the next reindex, embeds the new text.
        fresh = [r for r in rows if current.get(r[0]) == r[1]]
        if fresh:
            VectorStore(model).upsert_many(uow, fresh)
        if on_commit is not None:
            uow.after_commit(on_commit)  # first: the index is current before the drop below
        if fresh and cache is not None and caching.cache_policy(db, cache).invalidates:
            items = [(caching.SEARCH_GEN, caching.SEARCH_GEN_PARTS)]
            caching.invalidate_after_commit(cache, uow, items)
        uow.commit()
    return len(rows) - len(fresh)
