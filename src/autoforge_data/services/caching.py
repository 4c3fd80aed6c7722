"""Which use cases go through the cache, per deployment mode, and the helpers they share.

Decided by measurement (``bench/cache.py``, ``bench/results/cache.md``), on this rule: a cached
path must never be slower than the uncached one, and never serve what the uncached path would
not.

=========  ==========================  ==================================  ====================
mode       prompt by id, user's list   search results                      query embeddings
=========  ==========================  ==================================  ====================
embedded   no: a sqlite3 read (~9 µs)  yes, keyed by the data version      yes
           beats a Redis hit (~40 µs)  (SQLite's change counter, ~1 µs)
replica    no: a local replica read    yes, keyed by the replica's data    yes
           (~25 µs) beats a Redis hit  version (one local read, ~25 µs)
remote     yes (a read is ~1 ms),      yes, keyed by the search            yes
           with a shared cache         generation + the data version
                                       polled every 0.5 s
=========  ==========================  ==================================  ====================

"Shared" means Redis is configured (two levels). An in-process cache alone cannot hear other
processes' writes, so in remote mode without Redis prompt reads bypass it and search results are
keyed by the data version read per search (correct, if less of a gain).

The **data version** is ``(max(vector_journal.seq), max(prompt_versions.rowid))``: every vector
write and status/owner change adds a journal row (triggers), every create and edit a version row
(versions are immutable and never deleted), so any committed change made through the use cases
or the indexer - in any process - moves it. Metadata updates made with raw SQL do not.

The **search generation** is a random token in the cache: writers (prompts and vectors) drop it
after their commit, and the next reader makes a new one, so results keyed by the old token are
never read again. A write made without the cache (another tool, raw SQL) reaches
generation-keyed results through the polled data version, within the poll interval: the bound
the in-memory index already has for other processes' vector writes.

**Writers** with a shared cache on a server-backed database (remote, replica) drop the prompt,
its owner's list generation and the search generation after their commit, whatever their own
mode caches (one pipelined round trip): a replica-mode worker's edit must reach a remote-mode
API's cache. A prompt written without the cache stays cached, in remote mode, until its TTL:
every writer of a deployment with Redis must pass it.

In a replica deployment a replica that lags behind the primary would, if it filled a shared
cache after another process's invalidation, put the old row back for every process until the
TTL: one more reason its prompt reads bypass the cache.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.domain import Page, Prompt, PromptSummary
from autoforge_data.settings import Mode

if TYPE_CHECKING:
    from autoforge_data.cache import CacheAside, Codec

SearchKey = Literal["data_version", "generation"]

PROMPT = "prompt"
PROMPT_LIST = "prompt_list"
PROMPT_LIST_GEN = "prompt_list_gen"
SEARCH = "search"
SEARCH_GEN = "search_gen"
QUERY_EMBEDDING = "query_embedding"
SEARCH_GEN_PARTS = ["all"]
GEN_TTL = 86_400.0  # a generation token lives until a write drops it (or a day)
EMBEDDING_TTL = 86_400.0  # a model's vector of a text never changes
FRESHNESS_INTERVAL = 0.5  # seconds between data version polls (generation-keyed search)

_DATA_VERSION_SQL = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM vector_journal), "
    "(SELECT coalesce(max(rowid), 0) FROM prompt_versions)"
)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What one process caches for one database (see the module docstring)."""

    mode: str
    shared: bool  # the cache reaches other processes (Redis)
    prompts: bool  # get_prompt and list_prompts go through the cache
    search: bool  # search results
    embeddings: bool  # query embeddings
    search_key: SearchKey
    reason: str

    @property
    def invalidates(self) -> bool:
        """Do writers drop the prompt, list and search-generation keys after their commit?

        Whenever the cache is shared and the data lives on a server (remote, replica): another
        process of the deployment (say a remote-mode API next to a replica-mode worker) may
        cache what this one does not. Embedded files are only ever read in embedded mode, where
        nothing that a write changes is cached by key.
        """
        return self.shared and self.mode != Mode.EMBEDDED.value


def _policies() -> dict[tuple[Mode, bool], CachePolicy]:
    def make(mode: Mode, shared: bool, prompts: bool, key: SearchKey, why: str) -> CachePolicy:
        return CachePolicy(mode.value, shared, prompts, True, True, key, why)

    local = "a local read is faster than a Redis hit"
    alone = "an in-process cache cannot hear other processes' writes"
    return {
        (Mode.EMBEDDED, True): make(Mode.EMBEDDED, True, False, "data_version", local),
        (Mode.EMBEDDED, False): make(Mode.EMBEDDED, False, False, "data_version", local),
        (Mode.REPLICA, True): make(Mode.REPLICA, True, False, "data_version", local),
        (Mode.REPLICA, False): make(Mode.REPLICA, False, False, "data_version", local),
        (Mode.REMOTE, True): make(
            Mode.REMOTE, True, True, "generation", "a remote read costs a network round trip"
        ),
        (Mode.REMOTE, False): make(Mode.REMOTE, False, False, "data_version", alone),
    }


_POLICIES = _policies()
_REMOTE = Mode.REMOTE  # a module global: faster than the enum's class attribute, per read


def cache_policy(db: Database, cache: CacheAside | None = None) -> CachePolicy:
    """The policy for ``db``'s mode; with ``cache``, for that cache (shared or in-process only).

    Without ``cache`` the answer assumes a shared (Redis) cache: what the mode would cache.
    """
    shared = True if cache is None else is_shared(cache)
    return _POLICIES[(db.target.mode, shared)]


def caches_prompts(db: Database, cache: CacheAside) -> bool:
    """``cache_policy(db, cache).prompts``, on the hot path of every prompt read: the common
    "no" (embedded, replica) costs one attribute lookup and one comparison."""
    return db.target.mode is _REMOTE and is_shared(cache)


_SHARED: list[tuple[type, ...]] = []  # the Redis-backed backend types, imported on first use


def is_shared(cache: CacheAside) -> bool:
    """True when the cache has a Redis level (other processes see its fills and invalidations)."""
    if not _SHARED:
        from autoforge_data.cache import LayeredCache, RedisCache

        _SHARED.append((LayeredCache, RedisCache))
    return isinstance(cache.backend, _SHARED[0])


def database_key(db: Database) -> str:
    """Which database a cached search result is of: several databases may share one Redis
    (profiles, tenants, embedded files), and their data versions can be equal. The search
    generation is not per database on purpose: a write anywhere drops it (safe), whatever URL
    spelling each process uses."""
    target = db.target
    return target.url or str(target.path)


def data_version(db: Database) -> str:
    """The data version (see the module docstring) as a short text, in one statement."""
    with UnitOfWork(db) as uow:
        seq, version = uow.fetchone(_DATA_VERSION_SQL)
    return f"{int(seq)}.{int(version)}"


class DataVersionProbe:
    """:func:`data_version`, re-read only when SQLite says that the file changed.

    For an embedded file opened with stdlib sqlite3: ``PRAGMA data_version`` on a connection of
    our own, which never writes, changes whenever any other connection - of this process or of
    another - commits; it costs about 1 µs where reading the version through the pool costs 5.
    Other drivers (libSQL, remote, replica) read the version every time.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._seen: int | None = None
        self._value = ""
        if db.driver == "sqlite3" and db.target.path is not None:
            self._conn = sqlite3.connect(
                str(db.target.path),
                timeout=db.settings.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )

    def version(self) -> str:
        """The data version now."""
        conn = self._conn
        if conn is None:
            return data_version(self.db)
        try:
            with self._lock:
                changed = int(conn.execute("PRAGMA data_version").fetchone()[0])
                if changed != self._seen or not self._value:
                    seq, version = conn.execute(_DATA_VERSION_SQL).fetchone()
                    self._value, self._seen = f"{int(seq)}.{int(version)}", changed
                return self._value
        except sqlite3.Error:  # busy, or the file went away: the pool's path maps the error
            return data_version(self.db)

    def close(self) -> None:
        """Close the probe's connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def new_generation() -> str:
    """A fresh generation token."""
    return secrets.token_hex(8)


def generation(cache: CacheAside, kind: str, parts: list[str]) -> str:
    """The current generation token of (kind, parts); made on first use and after each drop."""
    return str(cache.get_or_load(kind, parts, new_generation, GEN_TTL))


def invalidate_after_commit(
    cache: CacheAside, uow: UnitOfWork, items: Sequence[tuple[str, list[str]]]
) -> None:
    """Drop (kind, parts) entries once ``uow`` commits, in one round trip; never on rollback.

    The keys are made now, so a bad input fails inside the use case, before its commit.
    """
    if not items:
        return
    keys = [cache.key(kind, parts) for kind, parts in items]
    uow.after_commit(lambda: cache.invalidate_keys(keys))


def prompt_writes(
    cache: CacheAside | None,
    db: Database,
    uow: UnitOfWork,
    *,
    prompt_ids: Sequence[str] = (),
    owner_ids: Sequence[str] = (),
) -> None:
    """Register the invalidations a write of these prompts (of these owners) needs."""
    if cache is None or not cache_policy(db, cache).invalidates:
        return
    items = [(PROMPT, [pid]) for pid in prompt_ids]
    items += [(PROMPT_LIST_GEN, [owner]) for owner in dict.fromkeys(owner_ids)]
    items.append((SEARCH_GEN, SEARCH_GEN_PARTS))
    invalidate_after_commit(cache, uow, items)


# --- codecs: records to JSON and back (every load builds new objects) ------------------------

_codecs: dict[str, Any] = {}


def _codec(name: str, dump: Callable[[Any], Any], load: Callable[[Any], Any]) -> Any:
    codec = _codecs.get(name)
    if codec is None:
        from autoforge_data.cache import Codec

        codec = _codecs[name] = Codec(dump, load)
    return codec


def _dump_prompt(p: Prompt) -> list[Any]:
    return [
        p.id,
        p.owner_id,
        p.title,
        p.content,
        p.status,
        p.current_version,
        p.metadata,
        p.created_at,
        p.updated_at,
    ]


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): 5-10x faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _load_prompt(v: list[Any]) -> Prompt:
    meta = _copy_json(v[6])  # cached values are shared between callers: hand out a copy
    return Prompt(v[0], v[1], v[2], v[3], v[4], v[5], meta, v[7], v[8])


def _dump_page(page: Page[PromptSummary]) -> dict[str, Any]:
    items = [
        [s.id, s.title, s.status, s.current_version, s.created_at, s.updated_at] for s in page.items
    ]
    return {"items": items, "next": page.next_cursor}


def _load_page(v: dict[str, Any]) -> Page[PromptSummary]:
    return Page([PromptSummary(*row) for row in v["items"]], v["next"])


def prompt_codec() -> Codec[Prompt]:
    """Prompt <-> a JSON list."""
    codec: Codec[Prompt] = _codec(PROMPT, _dump_prompt, _load_prompt)
    return codec


def page_codec() -> Codec[Page[PromptSummary]]:
    """A page of prompt summaries <-> JSON."""
    codec: Codec[Page[PromptSummary]] = _codec(PROMPT_LIST, _dump_page, _load_page)
    return codec
