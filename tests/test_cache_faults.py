"""Faults injected for real into the cache: Redis killed, hung (SIGSTOP), out of memory; races
forced by a deterministic interleaving; stampedes; hostile keys; lost and replayed invalidations.

Each protection has a sensitivity arm that turns it off and must show the failure it prevents.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoforge_data.cache import AsideOptions, Breaker, CacheAside, LayeredCache
from autoforge_data.cache.base import canonical, derive_key
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import InvalidInput
from autoforge_data.settings import Settings
from redis_cluster import Cluster, build_cache, new_schema, redis_cluster, wait_listening
from servers import Redis, start_redis

__all__ = ["redis_cluster"]  # the session fixture, imported for pytest to find
pytestmark = pytest.mark.redis

HANG_SECONDS = 15.0


def p99(samples: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def layered(cache: CacheAside) -> LayeredCache:
    """The two-level backend of ``cache``."""
    assert isinstance(cache.backend, LayeredCache)
    return cache.backend


def url_of(request: pytest.FixtureRequest, backend: str) -> tuple[str | None, bool]:
    """(url, cluster) of a backend name; the server fixtures are started on demand."""
    if backend == "memory":
        return None, False
    if backend == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        return cluster.url, True
    server: Redis = request.getfixturevalue("redis_server")
    return server.url, False


# --- Redis killed under load ----------------------------------------------------------------


class VersionedRows:
    """A fake table of versioned rows; a write is 'done' once its invalidation returned."""

    def __init__(self, n: int) -> None:
        self.version = dict.fromkeys(range(n), 0)
        self.done = dict.fromkeys(range(n), 0)

    def load(self, i: int) -> dict[str, int]:
        """The row as the database has it now."""
        return {"id": i, "v": self.version[i]}


def run_readers(
    read: Callable[[int], dict[str, int]], rows: VersionedRows, total: int, threads: int
) -> tuple[list[float], int]:
    """``total`` reads over ``threads`` threads: (latencies, stale reads)."""
    lat: list[float] = []
    stale = [0]
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(total // threads):
            i = rng.randrange(len(rows.version))
            floor = rows.done[i]
            start = time.perf_counter()
            row = read(i)
            elapsed = time.perf_counter() - start
            with lock:
                lat.append(elapsed)
                stale[0] += row["v"] < floor or row["id"] != i
            time.sleep(0.0005)

    pool = [threading.Thread(target=work, args=(s,)) for s in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return lat, stale[0]


def test_redis_killed_under_load(redis_server: Redis) -> None:
    """SIGKILL mid-run: 2,000 reads all current (writes keep going), added p99 under 5 ms."""
    rows = VersionedRows(100)
    cache = build_cache(redis_server.url, schema=new_schema())
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            i = rng.randrange(100)
            rows.version[i] += 1
            cache.invalidate("row", [i])  # what after_commit runs once COMMIT returned
            rows.done[i] = rows.version[i]
            time.sleep(0.003)

    def cached(i: int) -> dict[str, int]:
        return cache.get_or_load("row", [i], lambda: rows.load(i))

    base_lat, _ = run_readers(rows.load, rows, 1000, 2)
    run_readers(cached, rows, 1000, 2)  # warm: every row in L1 and L2
    killer = threading.Timer(0.3, redis_server.kill)
    w = threading.Thread(target=writer)
    w.start()
    killer.start()
    try:
        lat, stale = run_readers(cached, rows, 2000, 2)
    finally:
        stop.set()
        w.join()
        killer.join()
        cache.close()
    assert not redis_server.alive
    assert stale == 0
    added = p99(lat) - p99(base_lat)
    print(f"\nkilled: p99 {p99(lat) * 1e3:.3f} ms, direct p99 {p99(base_lat) * 1e3:.3f} ms")
    assert added < 0.005
    assert layered(cache).l2.breaker.opened >= 1


# --- Redis hung (SIGSTOP) -------------------------------------------------------------------


class Workload:
    """Threads reading random keys through the cache; records (time, latency, was a hit)."""

    def __init__(self, cache: CacheAside, keys: int = 300, threads: int = 4) -> None:
        self.cache = cache
        self.keys = keys
        self.samples: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._threads = [threading.Thread(target=self._run, args=(s,)) for s in range(threads)]

    def _load(self, i: int) -> dict[str, Any]:
        self._local.loaded = True
        time.sleep(0.001)  # a remote read
        return {"id": i, "title": f"prompt {i}"}

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            i = rng.randrange(self.keys)
            self._local.loaded = False
            start = time.monotonic()
            value = self.cache.get_or_load("prompt", [i], lambda i=i: self._load(i))
            elapsed = time.monotonic() - start
            assert value == {"id": i, "title": f"prompt {i}"}
            with self._lock:
                self.samples.append((start, elapsed, not self._local.loaded))
            time.sleep(0.0005)

    def __enter__(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def window(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        """The samples that started in [start, end)."""
        with self._lock:
            return [s for s in self.samples if start <= s[0] < end]


def hit_ratio(samples: list[tuple[float, float, bool]]) -> float:
    """The share of hits in ``samples``."""
    return sum(s[2] for s in samples) / len(samples) if samples else 0.0


def first_open(breaker: Breaker, since: float, limit: float = 5.0) -> float:
    """Seconds from ``since`` until the breaker left the closed state (inf if it didn't)."""
    while time.monotonic() - since < limit:
        if breaker.state != "closed":
            return time.monotonic() - since
        time.sleep(0.005)
    return float("inf")


@pytest.mark.slow
def test_redis_hung_fails_open_and_recovers(redis_server: Redis) -> None:
    """SIGSTOP for 15 s: p99 < 250 ms, breaker open < 1 s, hit ratio back to 90% < 30 s."""
    cache = build_cache(redis_server.url, schema=new_schema())
    breaker = layered(cache).l2.breaker
    with Workload(cache) as load:
        time.sleep(2.0)  # warm
        base_start = time.monotonic()
        time.sleep(1.5)
        baseline = hit_ratio(load.window(base_start, time.monotonic()))
        paused = time.monotonic()
        redis_server.pause()
        try:
            opened = first_open(breaker, paused)
            time.sleep(max(0.0, HANG_SECONDS - (time.monotonic() - paused)))
        finally:
            redis_server.resume()
        resumed = time.monotonic()
        recovered = None
        while time.monotonic() - resumed < 30 and recovered is None:
            time.sleep(0.5)
            now = time.monotonic()
            if hit_ratio(load.window(now - 0.5, now)) >= 0.9 * baseline:
                recovered = now - resumed
    cache.close()
    hung = [s[1] for s in load.window(paused, resumed)]
    print(
        f"\nhung: baseline hit ratio {baseline:.3f}, p99 {p99(hung) * 1e3:.1f} ms over "
        f"{len(hung)} reads, breaker open after {opened:.3f} s, recovered after {recovered} s"
    )
    assert baseline > 0.9
    assert p99(hung) < 0.25
    assert 0 <= opened < 1.0
    assert recovered is not None


def test_redis_hung_sensitivity(redis_server: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sensitivity arm: a breaker that never opens makes every read wait on the hung Redis."""
    cache = build_cache(redis_server.url, schema=new_schema())
    monkeypatch.setattr(layered(cache).l2.breaker, "allow", lambda: True)
    with Workload(cache, keys=50) as load:
        time.sleep(1.0)
        paused = time.monotonic()
        redis_server.pause()
        try:
            time.sleep(2.0)
        finally:
            redis_server.resume()
        resumed = time.monotonic()
    cache.close()
    hung = sorted(s[1] for s in load.window(paused + 1.0, resumed))  # after L1 was emptied
    assert hung and hung[len(hung) // 2] > 0.15


# --- the stale-after-write race -------------------------------------------------------------


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[Database]:
    """An embedded database with one row, kv('a') = 'old'."""
    db = Database(Settings.load("dev", base_dir=tmp_path, data_dir=tmp_path / "data"))
    with UnitOfWork(db, write=True) as uow:
        uow.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
        uow.execute("INSERT INTO kv VALUES ('a', 'old')")
        uow.commit()
    yield db
    db.close()


def forgotten(cache: CacheAside, key: str, timeout: float = 1.0) -> None:
    """Wait until ``cache``'s L1 no longer holds ``key`` (an invalidation travels by pub/sub)."""
    if not isinstance(cache.backend, LayeredCache):
        return
    deadline = time.monotonic() + timeout
    while cache.backend.l1.get(key) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def read_a(db: Database) -> str:
    """kv('a') as the database has it now."""
    with UnitOfWork(db) as uow:
        return str(uow.fetchone("SELECT v FROM kv WHERE k = 'a'")[0])


def race_round(db: Database, reader: CacheAside, writer: CacheAside, new: str) -> int:
    """One forced interleaving; returns how many reads after the write saw the old value."""
    writer.invalidate("kv", ["a"])  # the reader starts on a miss...
    forgotten(reader, reader.key("kv", ["a"]))  # ...once pub/sub reached its L1
    loaded, proceed = threading.Event(), threading.Event()

    def slow_read() -> str:
        value = read_a(db)  # 1. reader missed and reads the old row
        loaded.set()
        assert proceed.wait(5)
        return value  # 3. ...then it tries to cache the old row

    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(reader.get_or_load("kv", ["a"], slow_read)))
    t.start()
    assert loaded.wait(5)
    with UnitOfWork(db, write=True) as uow:  # 2. the writer commits and invalidates
        uow.execute("UPDATE kv SET v = ? WHERE k = 'a'", (new,))
        writer.after_commit(uow, "kv", ["a"])
        uow.commit()
    proceed.set()
    t.join(5)
    assert out  # the read that began before the write may return the old value
    after = [reader.get_or_load("kv", ["a"], lambda: read_a(db)) for _ in range(2)]
    after.append(writer.get_or_load("kv", ["a"], lambda: read_a(db)))
    return sum(v != new for v in after)


def race(db: Database, reader: CacheAside, writer: CacheAside, rounds: int = 5) -> int:
    """Force reader miss -> reader reads old -> writer commits + invalidates -> reader fills,
    ``rounds`` times; returns how many reads made after a write returned saw the old value."""
    return sum(race_round(db, reader, writer, f"v{n}") for n in range(rounds))


RACE_SETUPS = ["memory", "redis", "cluster", "redis-two-processes"]


def race_caches(
    request: pytest.FixtureRequest, setup: str, protect: bool
) -> tuple[CacheAside, CacheAside]:
    """(reader, writer): one cache, or two with their own L1 (like two processes)."""
    url, cluster = url_of(request, setup.split("-", maxsplit=1)[0])
    schema = new_schema()
    opts = AsideOptions(protect=protect, beta=0)
    reader = build_cache(url, schema=schema, cluster=cluster, options=opts)
    writer = reader
    if setup.endswith("two-processes"):
        writer = build_cache(url, schema=schema, cluster=cluster, options=opts)
    request.addfinalizer(reader.close)
    request.addfinalizer(writer.close)
    return reader, writer


@pytest.mark.parametrize("setup", RACE_SETUPS)
def test_stale_write_race_is_prevented(
    request: pytest.FixtureRequest, kv: Database, setup: str
) -> None:
    """With leases, a slow reader cannot re-cache what it read before a committed write."""
    reader, writer = race_caches(request, setup, protect=True)
    assert race(kv, reader, writer) == 0
    assert reader.metrics.count("fill_refused") >= 5


@pytest.mark.parametrize("setup", RACE_SETUPS)
def test_stale_write_race_sensitivity(
    request: pytest.FixtureRequest, kv: Database, setup: str
) -> None:
    """Sensitivity arm: plain cache-aside (no leases) re-caches the old value - stale reads."""
    reader, writer = race_caches(request, setup, protect=False)
    assert race(kv, reader, writer) >= 5


# --- stampede -------------------------------------------------------------------------------


def stampede(caches: list[CacheAside], threads: int = 200) -> tuple[int, list[Any]]:
    """``threads`` concurrent reads of a just-expired key (spread over ``caches``)."""
    calls = [0]
    lock = threading.Lock()

    def load() -> str:
        with lock:
            calls[0] += 1
        time.sleep(0.2)
        return "fresh"

    for cache in caches:
        cache.get_or_load("search", ["q"], lambda: "first", ttl=0.3)
    time.sleep(0.4)  # expired everywhere
    calls[0] = 0
    barrier = threading.Barrier(threads)
    results: list[Any] = []

    def one(cache: CacheAside) -> None:
        barrier.wait()
        results.append(cache.get_or_load("search", ["q"], load))

    pool = [threading.Thread(target=one, args=(caches[i % len(caches)],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return calls[0], results


@pytest.mark.parametrize("setup", ["memory", "redis-two-processes", "cluster-two-processes"])
def test_stampede_single_flight_and_lease(request: pytest.FixtureRequest, setup: str) -> None:
    """200 concurrent requests for a just-expired key with a 200 ms loader: at most 2 loads."""
    url, cluster = url_of(request, setup.split("-", maxsplit=1)[0])
    schema = new_schema()
    count = 2 if url else 1
    caches = [
        build_cache(url, schema=schema, cluster=cluster, options=AsideOptions(beta=0))
        for _ in range(count)
    ]
    try:
        calls, results = stampede(caches)
    finally:
        for cache in caches:
            cache.close()
    print(f"\nstampede ({setup}): {calls} loader call(s) for 200 requests")
    assert results == ["fresh"] * 200
    assert calls <= 2


def test_stampede_sensitivity(redis_server: Redis) -> None:
    """Sensitivity arm: without single-flight and leases the same stampede loads many times."""
    opts = AsideOptions(beta=0, single_flight=False, protect=False)
    cache = build_cache(redis_server.url, schema=new_schema(), options=opts)
    try:
        calls, _ = stampede([cache])
    finally:
        cache.close()
    assert calls > 20


# --- out of memory and oversized values -----------------------------------------------------


def test_redis_out_of_memory_and_huge_value(tmp_path: Path) -> None:
    """maxmemory + noeviction (SET fails) and a 10 MB value: no request fails, the cap holds."""
    server = start_redis(tmp_path, args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"])
    cache = build_cache(server.url, schema=new_schema(), l1_entries=0)
    try:
        value = "x" * 20_000
        for i in range(300):
            assert cache.get_or_load("search", [i], lambda: value) == value
        for i in range(300):
            assert cache.get_or_load("search", [i], lambda: value) == value
        assert cache.metrics.count("oom") >= 1
        assert cache.metrics.count("hit", level="l2") >= 10  # what fit is still served
        assert layered(cache).l2.breaker.state == "closed"  # Redis answers: not an outage
        huge = "y" * 10_000_000
        calls = [0]

        def big() -> str:
            calls[0] += 1
            return huge

        assert cache.get_or_load("search", ["huge"], big) == huge
        assert cache.get_or_load("search", ["huge"], big) == huge
        assert calls[0] == 2
        assert cache.metrics.count("oversize") == 2
        client = layered(cache).l2.client()
        key = cache.key("search", ["huge"])
        assert client.exists(key, key + ":lease") == 0
    finally:
        cache.close()
        server.stop()


# --- keys -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def norm(value: Any) -> Any:
    """A type-exact, hashable form of a JSON value (1, 1.0, True and -0.0 all differ)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int):
        return ("i", value)
    if isinstance(value, float):
        return ("f", repr(value))
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list | tuple):
        return ("l", tuple(norm(v) for v in value))
    return ("d", frozenset((k, norm(v)) for k, v in value.items()))


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, min_size=2, max_size=8))
def test_key_derivation_is_injective(values: list[Any]) -> None:
    """Distinct inputs get distinct keys, equal inputs equal keys (dict order is irrelevant)."""
    keys = {}
    for v in values:
        keys.setdefault(norm(v), set()).add(derive_key("0002", "search", v))
    assert all(len(k) == 1 for k in keys.values())
    flat = [next(iter(k)) for k in keys.values()]
    assert len(set(flat)) == len(flat)


def test_key_derivation_edge_cases() -> None:
    """Look-alike inputs differ; reordered dicts don't; tuples are lists."""
    k = lambda v: derive_key("0002", "search", v)  # noqa: E731
    assert len({k(["a", "b"]), k(["a,b"]), k(["a", "b", None]), k("a,b")}) == 4
    assert len({k([1]), k([1.0]), k([True]), k(["1"])}) == 4
    assert k({"a": 1, "b": 2}) == k({"b": 2, "a": 1})
    assert k((1, 2)) == k([1, 2])
    assert canonical({"é": "\x00"}) == b'{"\\u00e9":"\\u0000"}'


@pytest.mark.parametrize("kind", ["Prompt", "a*", "a:b", "x\r\n", "", "a" * 33, "1a", "a?b", "a b"])
def test_invalid_kinds_are_refused(kind: str) -> None:
    """A kind outside [a-z][a-z0-9_]{0,31} is refused before any I/O."""
    with pytest.raises(InvalidInput):
        derive_key("0002", kind, ["x"])


@pytest.mark.parametrize(
    "parts", [b"bytes", {1, 2}, {1: "a"}, float("nan"), float("inf"), object(), [[[[...]]]]]
)
def test_non_json_inputs_are_refused(parts: Any) -> None:
    """Inputs that JSON would coerce or reject (bytes, sets, int dict keys, NaN) are refused."""
    with pytest.raises(InvalidInput):
        derive_key("0002", "search", parts)


# --- invalidation between processes ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "cluster"])
def test_pubsub_invalidates_the_other_l1(request: pytest.FixtureRequest, backend: str) -> None:
    """A write through one cache drops the other cache's L1 copy within ~100 ms."""
    url, cluster = url_of(request, backend)
    schema = new_schema()
    a = build_cache(url, schema=schema, cluster=cluster)
    b = build_cache(url, schema=schema, cluster=cluster)
    try:
        delays = []
        for n in range(5):
            key = b.key("prompt", [n])
            assert a.get_or_load("prompt", [n], lambda: "old") == "old"
            assert b.get_or_load("prompt", [n], lambda: "never") == "old"
            assert layered(b).l1.get(key) is not None
            start = time.monotonic()
            a.invalidate("prompt", [n])
            while layered(b).l1.get(key) is not None and time.monotonic() - start < 2:
                time.sleep(0.001)
            delays.append(time.monotonic() - start)
            assert b.get_or_load("prompt", [n], lambda: "new") == "new"
        print(f"\npub/sub ({backend}): L1 dropped after {max(delays) * 1e3:.1f} ms at most")
        assert max(delays) < 0.1
    finally:
        a.close()
        b.close()


def test_listener_reconnects_and_empties_l1(redis_server: Redis) -> None:
    """Redis restarted: L1 is emptied and bypassed while deaf, then used again once back."""
    cache = build_cache(redis_server.url, schema=new_schema())
    backend = layered(cache)
    try:
        cache.get_or_load("prompt", ["r"], lambda: "v")
        assert len(backend.l1) == 1
        redis_server.kill()
        deadline = time.monotonic() + 3
        while backend.listener.healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not backend.listener.healthy
        assert len(backend.l1) == 0
        assert cache.get_or_load("prompt", ["r"], lambda: "db") == "db"
        assert len(backend.l1) == 0  # no invalidation channel: L1 is not trusted
        redis_server.start()
        wait_listening(cache)
        time.sleep(1.1)  # the breaker's cool-down
        for _ in range(3):
            cache.get_or_load("prompt", ["r"], lambda: "db")
        assert len(backend.l1) == 1
        assert backend.listener.reconnects >= 1
    finally:
        cache.close()


def hang_until_open(server: Redis, cache: CacheAside) -> None:
    """SIGSTOP Redis and wait until the cache stopped sending to it (its breaker opened)."""
    breaker = layered(cache).l2.breaker
    server.pause()
    deadline = time.monotonic() + 3
    while breaker.state == "closed" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert breaker.state != "closed"


def test_invalidation_lost_in_a_hang_is_replayed(redis_server: Redis) -> None:
    """A write while Redis hangs: its invalidation is kept and delivered before L2 is trusted."""
    rows = {"v": "old"}
    schema = new_schema()
    a, b = (build_cache(redis_server.url, schema=schema) for _ in range(2))
    try:
        assert a.get_or_load("prompt", ["p"], lambda: rows["v"]) == "old"
        hang_until_open(redis_server, a)
        try:
            rows["v"] = "new"
            a.invalidate("prompt", ["p"])  # the breaker is open: nothing is sent, it's kept
            assert layered(a).l2.stats()["pending_invalidations"] == 1
            assert a.get_or_load("prompt", ["p"], lambda: rows["v"]) == "new"
        finally:
            redis_server.resume()
        time.sleep(1.1)  # the breaker's cool-down
        assert a.get_or_load("prompt", ["p"], lambda: rows["v"]) == "new"
        assert layered(a).l2.stats()["pending_invalidations"] == 0
        assert b.get_or_load("prompt", ["p"], lambda: rows["v"]) == "new"  # L2 is clean
    finally:
        a.close()
        b.close()


def test_invalidation_replay_sensitivity(
    redis_server: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sensitivity arm: drop deferred invalidations and L2 serves the old value after the hang."""
    rows = {"v": "old"}
    schema = new_schema()
    a, b = (build_cache(redis_server.url, schema=schema) for _ in range(2))
    monkeypatch.setattr(layered(a).l2, "_defer", lambda keys: None)
    try:
        a.get_or_load("prompt", ["p"], lambda: rows["v"])
        hang_until_open(redis_server, a)
        try:
            rows["v"] = "new"
            a.invalidate("prompt", ["p"])
        finally:
            redis_server.resume()
        time.sleep(1.1)
        assert b.get_or_load("prompt", ["p"], lambda: rows["v"]) == "old"  # stale
    finally:
        a.close()
        b.close()
