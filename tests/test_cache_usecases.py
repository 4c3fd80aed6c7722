"""Cache-aside in the use cases: what each deployment mode caches, and that it is never stale.

Real sqld and redis-server processes. Reads are counted at the unit of work (a spy on
``UnitOfWork.execute``): a cached read runs no statement. "Another process" is a second cache on
the same Redis (its own L1, connections and pub/sub origin) or, where it matters, a real one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from autoforge_data.cache import CacheAside, LayeredCache, MemoryCache
from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import Conflict
from autoforge_data.services import caching
from autoforge_data.services import prompts as svc
from autoforge_data.services.search import SearchContext, index_prompts, reindex, search
from autoforge_data.settings import Mode
from autoforge_data.vector.base import Filter, Match
from autoforge_data.vector.embedders import FloatArray, HashEmbedder, Metric
from autoforge_data.vector.store import activate_model, register_model
from conftest import settings_for, unique_email
from redis_cluster import build_cache, new_schema
from servers import Redis, Sqld

pytestmark = [pytest.mark.redis, pytest.mark.sqld]
ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------


class Spy:
    """Counts the statements units of work run (reads and writes, every thread)."""

    def __init__(self) -> None:
        self.n = 0

    def count(self, fn: Callable[[], Any]) -> tuple[Any, int]:
        """``fn()``'s result and how many statements it ran."""
        before = self.n
        out = fn()
        return out, self.n - before


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """A statement counter installed for the test."""
    counter = Spy()
    real = UnitOfWork.execute

    def execute(
        self: UnitOfWork, sql: str, params: Sequence[Any] = (), *, kind: str = "query"
    ) -> Any:
        counter.n += 1
        return real(self, sql, params, kind=kind)

    monkeypatch.setattr(UnitOfWork, "execute", execute)
    return counter


@pytest.fixture
def caches(redis_server: Redis) -> Iterator[Callable[..., CacheAside]]:
    """Two-level caches on the test's Redis, one schema per test (so "processes" share keys)."""
    schema = new_schema()
    made: list[CacheAside] = []

    def make(**kw: Any) -> CacheAside:
        cache = build_cache(kw.pop("url", redis_server.url), schema=schema, **kw)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def remote_db(tmp_path: Path, sqld: Sqld) -> Iterator[Database]:
    """The session's sqld (tests use their own rows)."""
    db = Database(settings_for("remote", tmp_path, sqld))
    migrate.upgrade(db)
    try:
        yield db
    finally:
        db.close()


class CountingEmbedder:
    """The hashing embedder, counting the texts it embeds (a query embedded = a cache miss)."""

    metric: Metric = "cosine"
    normalized = True

    def __init__(self) -> None:
        self.inner = HashEmbedder(384)
        self.name = "hash-384"
        self.dimension = 384
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Record, then embed."""
        self.texts += list(texts)
        return self.inner.embed(texts)


def hash_model(db: Database) -> None:
    """Make hash-384 the active model of ``db``."""
    register_model(db, "hash-384", 384)
    activate_model(db, "hash-384")


TOPICS = [
    ("Summarize a long article", "Write a five bullet summary of the article for an executive."),
    ("Translate to German", "Translate the customer email into formal German."),
    ("Code review for Python", "Review this Python pull request for bugs and missing tests."),
    ("SQL query optimizer", "Suggest indexes for this slow PostgreSQL query."),
    ("Release notes", "Turn these merged pull requests into release notes for customers."),
]


def corpus(db: Database, cache: CacheAside | None = None) -> tuple[str, list[str]]:
    """An owner and five indexed-to-be prompts."""
    owner = svc.create_user(db, unique_email(), "searcher").id
    ids = [svc.create_prompt(db, owner, t, c, cache=cache).id for t, c in TOPICS]
    return owner, ids


def wait_for(cond: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds until ``cond()`` held (fails the test after ``timeout``)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.002)
    return time.monotonic() - start


# --- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "shared", "prompts", "key"),
    [
        (Mode.EMBEDDED, True, False, "data_version"),
        (Mode.EMBEDDED, False, False, "data_version"),
        (Mode.REPLICA, True, False, "data_version"),
        (Mode.REPLICA, False, False, "data_version"),
        (Mode.REMOTE, True, True, "generation"),
        (Mode.REMOTE, False, False, "data_version"),
    ],
)
def test_policy_per_mode(mode: Mode, shared: bool, prompts: bool, key: str) -> None:
    """Prompt reads are cached only in remote mode with Redis; search and embeddings always."""
    db: Any = SimpleNamespace(target=SimpleNamespace(mode=mode))
    backend = LayeredCache.__new__(LayeredCache) if shared else MemoryCache()
    cache: Any = SimpleNamespace(backend=backend)
    policy = caching.cache_policy(db, cache)
    assert (policy.prompts, policy.search, policy.embeddings) == (prompts, True, True)
    assert (policy.search_key, policy.shared) == (key, shared)
    assert caching.caches_prompts(db, cache) is prompts  # the hot path agrees with the table
    assert policy.invalidates is (shared and mode is not Mode.EMBEDDED)
    if shared:
        assert caching.cache_policy(db) == policy  # no cache given: what Redis would get


# --- remote mode: prompt by id and a user's list ------------------------------------------


def test_remote_reads_hit_and_writes_invalidate_after_commit(
    remote_db: Database, caches: Callable[..., CacheAside], spy: Spy
) -> None:
    """Second reads run no statement; every write is visible to the next read of its writer."""
    db, cache = remote_db, caches()
    owner = svc.create_user(db, unique_email(), "owner").id
    p = svc.create_prompt(db, owner, "First", "Version one text", cache=cache)

    def fresh(got: object, uncached: Callable[[], object]) -> None:
        assert got == uncached()

    got, n = spy.count(lambda: svc.get_prompt(db, p.id, cache=cache))
    assert (got, n) == (p, 1)
    got, n = spy.count(lambda: svc.get_prompt(db, p.id, cache=cache))
    assert (got, n) == (p, 0)
    page, n = spy.count(lambda: svc.list_prompts(db, owner, cache=cache))
    assert n == 1
    assert [s.id for s in page.items] == [p.id]
    again, n = spy.count(lambda: svc.list_prompts(db, owner, cache=cache))
    assert (again, n) == (page, 0)
    drafts, _ = spy.count(lambda: svc.list_prompts(db, owner, status="draft", cache=cache))
    assert spy.count(lambda: svc.list_prompts(db, owner, status="draft", cache=cache)) == (
        drafts,
        0,
    )

    edited = svc.edit_prompt(db, p.id, content="Version two text", cache=cache)
    got, n = spy.count(lambda: svc.get_prompt(db, p.id, cache=cache))
    assert (got, n) == (edited, 1)
    assert got.current_version == 2
    assert got.content == "Version two text"
    fresh(svc.list_prompts(db, owner, cache=cache), lambda: svc.list_prompts(db, owner))
    assert svc.list_prompts(db, owner, cache=cache).items[0].current_version == 2

    svc.set_status(db, p.id, "active", cache=cache)
    assert svc.get_prompt(db, p.id, cache=cache).status == "active"
    assert svc.list_prompts(db, owner, status="draft", cache=cache).items == []
    active = svc.list_prompts(db, owner, status="active", cache=cache)
    assert [s.id for s in active.items] == [p.id]

    q = svc.create_prompt(db, owner, "Second", "Another text", cache=cache)
    listed = svc.list_prompts(db, owner, cache=cache)
    assert [s.id for s in listed.items] == [q.id, p.id]
    fresh(listed, lambda: svc.list_prompts(db, owner))
    fresh(svc.get_prompt(db, p.id, cache=cache), lambda: svc.get_prompt(db, p.id))

    # paging: every page of the owner is dropped by one write
    first = svc.list_prompts(db, owner, limit=1, cache=cache)
    second = svc.list_prompts(db, owner, limit=1, cursor=first.next_cursor, cache=cache)
    assert [s.id for s in second.items] == [p.id]
    svc.edit_prompt(db, p.id, title="Renamed", cache=cache)
    second = svc.list_prompts(db, owner, limit=1, cursor=first.next_cursor, cache=cache)
    assert second.items[0].title == "Renamed"

    hits = cache.metrics.count("hit", kind=caching.PROMPT)
    assert hits >= 1
    assert cache.metrics.count("error") == 0


def test_cached_prompt_is_a_private_copy(
    remote_db: Database, caches: Callable[..., CacheAside]
) -> None:
    """A caller mutating the metadata it got changes nobody else's answer."""
    db, cache = remote_db, caches()
    owner = svc.create_user(db, unique_email(), "owner").id
    p = svc.create_prompt(db, owner, "T", "C", metadata={"tags": ["a"]}, cache=cache)
    svc.get_prompt(db, p.id, cache=cache)
    mine = svc.get_prompt(db, p.id, cache=cache)
    mine.metadata["tags"].append("mutated")
    assert svc.get_prompt(db, p.id, cache=cache).metadata == {"tags": ["a"]}


def test_rolled_back_unit_of_work_invalidates_nothing(
    remote_db: Database, caches: Callable[..., CacheAside], spy: Spy
) -> None:
    """A refused edit (Conflict) and a unit of work that raises leave the cache as it was;
    a committed one invalidates only once COMMIT returned."""
    db, cache = remote_db, caches()
    owner = svc.create_user(db, unique_email(), "owner").id
    p = svc.create_prompt(db, owner, "T", "original", cache=cache)
    svc.get_prompt(db, p.id, cache=cache)
    svc.list_prompts(db, owner, cache=cache)
    key = cache.key(caching.PROMPT, [p.id])

    with pytest.raises(Conflict):
        svc.edit_prompt(db, p.id, content="lost", expected_version=7, cache=cache)
    assert spy.count(lambda: svc.get_prompt(db, p.id, cache=cache)) == (p, 0)
    assert spy.count(lambda: svc.list_prompts(db, owner, cache=cache))[1] == 0

    with pytest.raises(RuntimeError), UnitOfWork(db, write=True) as uow:
        uow.execute("UPDATE prompts SET title = 'rolled back' WHERE id = ?", (p.id,))
        caching.prompt_writes(cache, db, uow, prompt_ids=[p.id], owner_ids=[owner])
        raise RuntimeError("the use case failed before its commit")
    assert spy.count(lambda: svc.get_prompt(db, p.id, cache=cache)) == (p, 0)
    assert cache.backend.get(key) is not None

    with UnitOfWork(db, write=True) as uow:
        uow.execute("UPDATE prompts SET title = 'committed' WHERE id = ?", (p.id,))
        caching.prompt_writes(cache, db, uow, prompt_ids=[p.id], owner_ids=[owner])
        assert svc.get_prompt(db, p.id, cache=cache).title == "T"  # not before the commit
        uow.commit()
    assert svc.get_prompt(db, p.id, cache=cache).title == "committed"


def test_replica_mode_writer_invalidates_a_remote_mode_reader(
    remote_db: Database, caches: Callable[..., CacheAside], sqld: Sqld, tmp_path: Path
) -> None:
    """A replica-mode process caches no prompt reads, but its writes still drop what a
    remote-mode process of the same deployment caches."""
    reader, reader_cache, writer_cache = remote_db, caches(), caches()
    owner = svc.create_user(reader, unique_email(), "owner").id
    p = svc.create_prompt(reader, owner, "T", "before", cache=reader_cache)
    svc.get_prompt(reader, p.id, cache=reader_cache)
    svc.list_prompts(reader, owner, cache=reader_cache)
    writer = Database(settings_for("replica", tmp_path / "worker", sqld))
    try:
        writer.replica.sync()
        assert not caching.cache_policy(writer, writer_cache).prompts
        svc.edit_prompt(writer, p.id, content="after", cache=writer_cache)
    finally:
        writer.close()
    wait_for(lambda: svc.get_prompt(reader, p.id, cache=reader_cache).content == "after", 0.5)
    assert svc.list_prompts(reader, owner, cache=reader_cache).items[0].current_version == 2


WRITER = """
import json, sys, time
from pathlib import Path
from autoforge_data.cache import make_cache
from autoforge_data.db.engine import Database
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
args = json.loads(sys.argv[1])
settings = Settings.load(
    "dev", base_dir=Path(args["tmp"]), database_url=args["db"], redis_url=args["redis"]
)
db = Database(settings)
cache = make_cache(settings, schema=args["schema"])  # listen=False: see the report
svc.get_prompt(db, args["id"])  # connections warm: the edit below is all that is timed
print("ready", flush=True)
sys.stdin.readline()
svc.edit_prompt(db, args["id"], content="edited by another process", cache=cache)
print(json.dumps({"done": time.time()}), flush=True)
cache.close()
db.close()
"""


def test_another_process_l1_drops_within_100ms(
    remote_db: Database,
    caches: Callable[..., CacheAside],
    sqld: Sqld,
    redis_server: Redis,
    tmp_path: Path,
) -> None:
    """A real second process edits; our L1 copy is gone within 100 ms of its use case
    returning, and our next read is the new version."""
    db, cache = remote_db, caches()
    owner = svc.create_user(db, unique_email(), "owner").id
    p = svc.create_prompt(db, owner, "T", "before", cache=cache)
    svc.get_prompt(db, p.id, cache=cache)
    key = cache.key(caching.PROMPT, [p.id])
    l1 = cache.backend.l1  # type: ignore[attr-defined]
    assert l1.get(key) is not None
    args = {
        "tmp": str(tmp_path),
        "db": sqld.url,
        "redis": redis_server.url,
        "schema": cache.schema,
        "id": p.id,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        dropped: list[float] = []

        def watch() -> None:
            while l1.get(key) is not None:
                time.sleep(0.0005)
            dropped.append(time.time())

        watcher = threading.Thread(target=watch)
        watcher.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = json.loads(proc.stdout.readline())["done"]
        watcher.join(5)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert dropped, "our L1 copy was never dropped"
    assert dropped[0] - done < 0.1
    got = svc.get_prompt(db, p.id, cache=cache)
    assert (got.current_version, got.content) == (2, "edited by another process")


# --- embedded mode: prompt reads bypass; search and query embeddings are cached --------------


@pytest.fixture
def embedded_db(tmp_path: Path) -> Iterator[Database]:
    """An embedded file whose active model is hash-384."""
    db = Database(settings_for("embedded", tmp_path))
    migrate.upgrade(db)
    hash_model(db)
    try:
        yield db
    finally:
        db.close()


def test_embedded_prompt_reads_bypass_the_cache(
    embedded_db: Database, caches: Callable[..., CacheAside], spy: Spy
) -> None:
    """A local read beats a Redis hit: get/list always read the file, and touch no cache."""
    db, cache = embedded_db, caches()
    owner = svc.create_user(db, unique_email(), "owner").id
    p = svc.create_prompt(db, owner, "T", "C", cache=cache)
    for _ in range(2):
        assert spy.count(lambda: svc.get_prompt(db, p.id, cache=cache)) == (p, 1)
        assert spy.count(lambda: svc.list_prompts(db, owner, cache=cache))[1] == 1
    svc.edit_prompt(db, p.id, content="C2", cache=cache)
    assert svc.get_prompt(db, p.id, cache=cache).content == "C2"
    for event in ("hit", "miss"):
        assert cache.metrics.count(event, kind=caching.PROMPT) == 0
        assert cache.metrics.count(event, kind=caching.PROMPT_LIST) == 0


def test_embedded_search_and_query_embeddings_are_cached_and_never_stale(
    embedded_db: Database, caches: Callable[..., CacheAside], spy: Spy, tmp_path: Path
) -> None:
    """A repeated search reads nothing but SQLite's change counter; a query embedded once is a
    hit for other contexts and other processes; an edit, a reindex and a write by a process
    without the cache each make the next identical search equal the uncached one."""
    db, cache = embedded_db, caches()
    _, ids = corpus(db, cache)
    embedder = CountingEmbedder()
    reindex(db, embedder=embedder)
    ctx = SearchContext.open(db, data_dir=tmp_path / "idx", embedder=embedder, cache=cache)
    plain = SearchContext(db, ctx.model, ctx.index, embedder)  # same index, no cache
    query = "review a python pull request"
    try:
        first = search(ctx, query, k=3)
        assert first[0].prompt_id == ids[2]
        embedded = len(embedder.texts)
        again, n = spy.count(lambda: search(ctx, query, k=3))
        # no unit of work at all: the data version comes from PRAGMA data_version on the
        # probe's own connection (and is re-read only when the file changed)
        assert (again, n) == (first, 0)
        assert len(embedder.texts) == embedded
        assert cache.metrics.count("hit", kind=caching.SEARCH) == 1

        # the query vector: another context (its own in-process LRU), then another process
        other = SearchContext(db, ctx.model, ctx.index, embedder, cache=cache)
        assert search(other, query, k=4, mode="vector")[0].prompt_id == ids[2]
        elsewhere = SearchContext(db, ctx.model, ctx.index, embedder, cache=caches())
        assert search(elsewhere, query, k=5, mode="vector")[0].prompt_id == ids[2]
        assert len(embedder.texts) == embedded
        assert cache.metrics.count("hit", kind=caching.QUERY_EMBEDDING) >= 1

        # an edit: the next search shows version 2 (the old vector until reindexed)
        svc.edit_prompt(
            db, ids[4], content="Review python pull requests for bugs and tests", cache=cache
        )
        after_edit = search(ctx, query, k=3)
        assert after_edit == search(plain, query, k=3)
        assert {m.prompt_id: m.version for m in after_edit}.get(ids[4], 2) == 2
        index_prompts(ctx, [ids[4]])
        after_index = search(ctx, query, k=3)
        assert after_index == search(plain, query, k=3)
        assert ids[4] in {m.prompt_id for m in after_index}
        assert after_index != first

        # a writer without any cache (another tool, another Database): seen at once
        other_db = Database(db.settings)
        try:
            svc.set_status(other_db, ids[2], "archived")
        finally:
            other_db.close()
        # ... and its new vectors, before our index's own timed refresh would apply them
        other_db = Database(db.settings)
        try:
            svc.edit_prompt(other_db, ids[0], content="python pull request review checklist")
            reindex(other_db, embedder=CountingEmbedder())
        finally:
            other_db.close()
        got = search(ctx, "python review checklist", k=3, mode="vector")
        with SearchContext.open(db, kind="exact", embedder=embedder) as truth:
            assert got == search(truth, "python review checklist", k=3, mode="vector")
        assert got[0].prompt_id == ids[0]

        flt = Filter(status=("draft",))
        got = search(ctx, query, k=3, flt=flt)
        assert ids[2] not in {m.prompt_id for m in got}
        assert got == search(plain, query, k=3, flt=flt)
        for mode in ("keyword", "vector", "hybrid"):
            assert search(ctx, query, k=5, mode=mode) == search(plain, query, k=5, mode=mode)
    finally:
        ctx.close()


EMBEDDED_WRITER = """
import sys
from pathlib import Path
from autoforge_data.db.engine import Database
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
tmp = Path(sys.argv[1])
with Database(Settings.load("dev", base_dir=tmp, data_dir=tmp / "data")) as db:
    svc.set_status(db, sys.argv[2], "archived")
"""


def test_embedded_search_sees_another_process_commit(
    embedded_db: Database, caches: Callable[..., CacheAside], tmp_path: Path
) -> None:
    """A real second process without any cache archives a prompt: the next identical cached
    search (SQLite's change counter moved) leaves it out of an active-only search."""
    db, cache = embedded_db, caches()
    _, ids = corpus(db, cache)
    with UnitOfWork(db, write=True) as uow:
        uow.execute("UPDATE prompts SET status = 'active' WHERE id IN (?, ?, ?, ?, ?)", ids)
        uow.commit()
    embedder = CountingEmbedder()
    reindex(db, embedder=embedder)
    ctx = SearchContext.open(db, kind="exact", embedder=embedder, cache=cache)
    active = Filter(status=("active",))
    query = "translate an email to german"
    try:
        first = search(ctx, query, k=5, flt=active)
        assert first[0].prompt_id == ids[1]
        assert search(ctx, query, k=5, flt=active) == first  # cached
        subprocess.run(
            [sys.executable, "-c", EMBEDDED_WRITER, str(tmp_path), ids[1]], check=True, cwd=ROOT
        )
        got = search(ctx, query, k=5, flt=active)
        assert ids[1] not in {m.prompt_id for m in got}
        assert len(got) == 4
    finally:
        ctx.close()


# --- remote mode: search keyed by the generation --------------------------------------------


@pytest.fixture
def own_remote(fresh_sqld: Sqld, tmp_path: Path) -> Iterator[Database]:
    """A sqld of the test's own (its active model is changed) with hash-384 active."""
    db = Database(settings_for("remote", tmp_path, fresh_sqld))
    migrate.upgrade(db)
    hash_model(db)
    try:
        yield db
    finally:
        db.close()


def test_remote_search_generation_is_dropped_by_every_writer(
    own_remote: Database, caches: Callable[..., CacheAside], spy: Spy, tmp_path: Path
) -> None:
    """A repeated remote search runs no statement; writes through another process's cache show
    as soon as its invalidation arrives; writes without a cache within the poll interval."""
    db = own_remote
    cache, theirs = caches(), caches()
    _, ids = corpus(db, cache)
    embedder = CountingEmbedder()
    reindex(db, embedder=embedder, cache=cache)
    ctx = SearchContext.open(
        db, kind="exact", embedder=embedder, cache=cache, freshness_interval=60
    )
    assert ctx.policy is not None
    assert ctx.policy.search_key == "generation"
    writer = SearchContext.open(db, kind="exact", embedder=embedder, cache=theirs)
    query = "translate an email to german"

    def truth(flt: Filter | None = None) -> list[Match]:
        with SearchContext.open(db, kind="exact", embedder=embedder) as fresh:
            return search(fresh, query, k=3, flt=flt)

    try:
        first = search(ctx, query, k=3)
        assert first[0].prompt_id == ids[1]
        assert spy.count(lambda: search(ctx, query, k=3)) == (first, 0)

        # another process edits and reindexes through its cache: seen when its invalidation
        # arrives (well before the 60 s poll), with the new vector (before our index's own
        # timed refresh would have applied it)
        svc.edit_prompt(db, ids[3], content="Translate this email into German", cache=theirs)
        index_prompts(writer, [ids[3]])
        wait_for(lambda: search(ctx, query, k=3) != first, timeout=0.25)
        got = search(ctx, query, k=3)
        assert got == truth()
        assert ids[3] in {m.prompt_id for m in got}

        # a writer without a cache: seen once the poll interval has passed
        polled = SearchContext(
            db, ctx.model, ctx.index, embedder, cache=cache, freshness_interval=0.3
        )
        drafts = Filter(status=("draft",))
        assert ids[1] in {m.prompt_id for m in search(polled, query, k=3, flt=drafts)}
        svc.set_status(db, ids[1], "archived")
        time.sleep(0.35)
        got = search(polled, query, k=3, flt=drafts)
        assert ids[1] not in {m.prompt_id for m in got}
        assert got == truth(drafts)
    finally:
        writer.close()
        ctx.close()


# --- Redis down ------------------------------------------------------------------------------


def test_redis_down_every_use_case_answers_from_the_database(
    own_remote: Database, caches: Callable[..., CacheAside], redis_server: Redis
) -> None:
    """Redis killed: reads, writes and searches all answer correctly from the database, fast;
    the errors are counted and the breaker opens."""
    db, cache = own_remote, caches()
    owner, ids = corpus(db, cache)
    embedder = CountingEmbedder()
    reindex(db, embedder=embedder, cache=cache)
    ctx = SearchContext.open(db, kind="exact", embedder=embedder, cache=cache)
    plain = SearchContext(db, ctx.model, ctx.index, embedder)
    query = "sql query indexes"
    try:
        assert svc.get_prompt(db, ids[0], cache=cache).id == ids[0]
        assert search(ctx, query, k=2)[0].prompt_id == ids[3]
        redis_server.kill()

        start = time.monotonic()
        for _ in range(3):
            assert svc.get_prompt(db, ids[0], cache=cache) == svc.get_prompt(db, ids[0])
            page = svc.list_prompts(db, owner, cache=cache)
            assert page == svc.list_prompts(db, owner)
            edited = svc.edit_prompt(db, ids[0], content="new text", cache=cache)
            assert svc.get_prompt(db, ids[0], cache=cache) == edited
            p = svc.create_prompt(db, owner, "New", "more text", cache=cache)
            assert svc.set_status(db, p.id, "active", cache=cache).status == "active"
            assert svc.list_prompts(db, owner, cache=cache).items[0].id == p.id
            got: list[Match] = search(ctx, query, k=2)
            assert got == search(plain, query, k=2)
            assert search(ctx, "never asked before", k=2) == search(
                plain, "never asked before", k=2
            )
        assert time.monotonic() - start < 10
        # the first failing calls (or the invalidation listener, whichever notices first) open
        # the breaker; every call is counted: failed ("error") or not tried ("skipped")
        failed = cache.metrics.count("error", level="l2")
        skipped = cache.metrics.count("skipped", level="l2")
        assert skipped >= 10
        assert failed + skipped >= 20
        assert cache.backend.l2.breaker.opened >= 1  # type: ignore[attr-defined]
    finally:
        ctx.close()
