"""The cache contract, run on the in-process cache, a real Redis and a real 3-master Cluster.

Plus the pieces on their own: the breaker, the LRU, URL checks, the settings factory, ACL
credentials, TLS with a private CA, and invalidation through a real unit of work.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from autoforge_data.cache import (
    AsideOptions,
    Breaker,
    CacheAside,
    Codec,
    LayeredCache,
    MemoryCache,
    Metrics,
    RedisCache,
    cache_stats,
    flush,
    make_cache,
    parse_redis_url,
)
from autoforge_data.cache.base import encode_entry
from autoforge_data.cache.metrics import MAX_KINDS
from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.errors import ConfigError
from autoforge_data.settings import Settings
from redis_cluster import BACKENDS, Cluster, build_cache, new_schema, redis_cluster
from servers import Redis, free_port, start_redis

__all__ = ["redis_cluster"]  # the session fixture, imported for pytest to find
pytestmark = pytest.mark.redis

Factory = Callable[..., CacheAside]
KEY_RE = re.compile(r"afdb:vt[0-9a-f]{12}:[a-z_]+:\{[0-9a-f]{64}\}\Z")


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest) -> Iterator[Factory]:
    """Build caches on one backend (in-process, Redis, Cluster); all closed after the test."""
    url, cluster = None, False
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    elif request.param == "cluster":
        url, cluster = request.getfixturevalue("redis_cluster").url, True
    made: list[CacheAside] = []
    schema = new_schema()

    def factory(**kw: Any) -> CacheAside:
        cache = build_cache(url, schema=kw.pop("schema", schema), cluster=cluster, **kw)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        cache.close()


class Loader:
    """A loader that counts its calls and returns the current value of a fake row."""

    def __init__(self, value: Any = "v1", delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.value


def redis_client(cache: CacheAside) -> Any:
    """The raw redis-py client under a cache (None for the in-process backend)."""
    backend = cache.backend
    if isinstance(backend, LayeredCache):
        return backend.l2.client()
    if isinstance(backend, RedisCache):
        return backend.client()
    return None


# --- the contract ---------------------------------------------------------------------------


def test_miss_then_hit(make: Factory) -> None:
    """The first read loads, the next ones are hits; counters say so."""
    cache = make()
    load = Loader({"title": "t", "n": 1})
    for _ in range(3):
        assert cache.get_or_load("prompt", ["p1"], load) == {"title": "t", "n": 1}
    assert load.calls == 1
    assert cache.metrics.count("miss", kind="prompt") == 1
    assert cache.metrics.count("hit", kind="prompt") == 2


def test_distinct_inputs_distinct_entries(make: Factory) -> None:
    """Different key parts and different kinds never share an entry."""
    cache = make()
    assert cache.get_or_load("prompt", ["a"], lambda: 1) == 1
    assert cache.get_or_load("prompt", ["b"], lambda: 2) == 2
    assert cache.get_or_load("prompt_list", ["a"], lambda: 3) == 3
    assert cache.get_or_load("prompt", {"id": "a"}, lambda: 4) == 4
    assert cache.get_or_load("prompt", ["a"], lambda: 99) == 1


def test_invalidate_reloads(make: Factory) -> None:
    """After invalidation the next read loads the new value."""
    cache = make()
    load = Loader("old")
    assert cache.get_or_load("prompt", ["p"], load) == "old"
    load.value = "new"
    cache.invalidate("prompt", ["p"])
    assert cache.get_or_load("prompt", ["p"], load) == "new"
    assert load.calls == 2


def test_ttl_expires(make: Factory) -> None:
    """An entry is gone after its TTL."""
    cache = make(options=AsideOptions(beta=0))
    load = Loader()
    cache.get_or_load("prompt", ["ttl"], load, ttl=0.3)
    cache.get_or_load("prompt", ["ttl"], load, ttl=0.3)
    time.sleep(0.45)
    cache.get_or_load("prompt", ["ttl"], load, ttl=0.3)
    assert load.calls == 2


def test_ttl_jitter_spreads_expiry(make: Factory) -> None:
    """TTLs are shortened by a random fraction: keys filled together don't expire together."""
    cache = make(options=AsideOptions(jitter=0.2))
    now = time.time()
    for i in range(40):
        cache.get_or_load("search", [i], lambda: "x", ttl=100)
    expiries = []
    for i in range(40):
        hit = cache.backend.get(cache.key("search", [i]))
        assert hit is not None
        expiries.append(hit.expires_at)
    assert all(now + 79 <= e <= now + 101 for e in expiries)
    assert max(expiries) - min(expiries) > 2.0
    client = redis_client(cache)
    if client is not None:
        assert 79_000 <= client.pttl(cache.key("search", [0])) <= 100_000


def test_oversize_value_is_not_cached(make: Factory) -> None:
    """A value over the size cap is returned but never stored, and counted."""
    cache = make(max_value_bytes=2048)
    load = Loader("x" * 5000)
    assert cache.get_or_load("search", ["big"], load) == "x" * 5000
    assert cache.get_or_load("search", ["big"], load) == "x" * 5000
    assert load.calls == 2
    assert cache.metrics.count("oversize") >= 1
    client = redis_client(cache)
    if client is not None:
        assert (
            client.exists(cache.key("search", ["big"]), cache.key("search", ["big"]) + ":lease")
            == 0
        )


def test_non_json_value_is_not_cached(make: Factory) -> None:
    """A value JSON cannot carry (never pickled) is returned, not stored, and counted."""
    cache = make()
    load = Loader({"tags": {"a", "b"}})
    assert cache.get_or_load("search", ["set"], load) == {"tags": {"a", "b"}}
    cache.get_or_load("search", ["set"], load)
    assert load.calls == 2
    assert cache.metrics.count("unencodable") == 2


@dataclass(frozen=True)
class Row:
    """A typed record, like the use cases return."""

    id: str
    title: str
    created: str


ROW_CODEC: Codec[Row] = Codec(dump=asdict, load=lambda d: Row(**d))


def test_codec_round_trip(make: Factory) -> None:
    """A codec turns typed records into JSON and back; hits return equal records."""
    cache = make()
    row = Row("01J", "hello", dt.datetime(2025, 1, 1, tzinfo=dt.UTC).isoformat())
    assert cache.get_or_load("prompt", ["01J"], lambda: row, codec=ROW_CODEC) is row
    again = cache.get_or_load("prompt", ["01J"], Loader(), codec=ROW_CODEC)
    assert again == row
    assert isinstance(again, Row)


def test_loader_error_propagates_and_frees_the_lease(make: Factory) -> None:
    """A failing loader raises to the caller, stores nothing, and doesn't block the next load."""
    cache = make()

    def broken() -> str:
        raise KeyError("db down")

    with pytest.raises(KeyError):
        cache.get_or_load("prompt", ["err"], broken)
    start = time.monotonic()
    assert cache.get_or_load("prompt", ["err"], lambda: "ok") == "ok"
    assert time.monotonic() - start < 0.5  # no wait on a lease left behind
    assert cache.get_or_load("prompt", ["err"], broken) == "ok"


def test_early_recompute_keeps_a_hot_key_warm(make: Factory) -> None:
    """XFetch recomputes a hot key before it expires: readers never see it missing."""
    cache = make(options=AsideOptions(beta=1.0, jitter=0.0))
    load = Loader("hot", delay=0.05)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        cache.get_or_load("search", ["hot"], load, ttl=0.4)
        time.sleep(0.005)
    assert cache.metrics.count("miss", kind="search") <= 2  # without XFetch: 5 or 6
    assert cache.metrics.count("early_refresh", kind="search") >= 3
    assert load.calls <= 10  # ~one recompute per TTL, not one per read


def test_flush_deletes_only_our_kind(make: Factory) -> None:
    """flush(kind) removes that kind's keys; other kinds and foreign keys stay."""
    cache = make()
    for i in range(30):
        cache.get_or_load("search", [i], lambda: "s")
    cache.get_or_load("prompt", ["keep"], lambda: "p")
    client = redis_client(cache)
    foreign = ["user:1", "afdb:vother:search:{x}", "afdb:search*"]
    if client is not None:
        for key in foreign:
            client.set(key, "mine")
    assert flush(cache, "search") >= 30
    load = Loader("again")
    assert cache.get_or_load("search", [1], load) == "again"
    assert cache.get_or_load("prompt", ["keep"], Loader()) == "p"
    if client is not None:
        assert all(client.get(k) == b"mine" for k in foreign)
        assert flush(cache) >= 2
        assert all(client.get(k) == b"mine" for k in foreign)
        client.delete(*foreign)


def test_stats_report_hits_and_backend(make: Factory) -> None:
    """cache_stats gives the hit ratio, counters, latencies and the backend's state."""
    cache = make()
    load = Loader()
    for _ in range(4):
        cache.get_or_load("prompt", ["s"], load)
    stats = cache_stats(cache)
    assert stats["hit_ratio"] == 0.75
    assert stats["backend"]["backend"] in ("memory", "layered")
    events = {(c["kind"], c["event"]) for c in stats["metrics"]["counters"]}
    assert {("prompt", "hit"), ("prompt", "miss")} <= events
    assert any(h["level"] == "load" for h in stats["metrics"]["latency"])
    if redis_client(cache) is not None:
        keys = cache_stats(cache, count_keys=True)["keys"]
        assert keys == {"per_kind": {"prompt": 1}, "truncated": False}


def test_hostile_inputs_make_safe_keys(make: Factory) -> None:
    """Glob characters, CRLF, NUL and megabyte inputs become fixed-size hex keys that work."""
    cache = make()
    hostile = ["*", "?", "[a-z]", "\r\nFLUSHALL\r\n", "a\x00b", "x" * 1_000_000, "{tag}", "é"]
    for i, text in enumerate(hostile):
        key = cache.key("search", [text])
        assert KEY_RE.match(key), key
        assert cache.get_or_load("search", [text], lambda i=i: i) == i
        assert cache.get_or_load("search", [text], Loader()) == i


# --- the breaker ----------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes() -> None:
    """N consecutive failures open it; after the cool-down one probe passes; success closes."""
    clock = FakeClock()
    b = Breaker(threshold=3, cooldown=1.0, clock=clock)
    b.failure()
    b.failure()
    b.success()  # not consecutive any more
    b.failure()
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open"
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()  # the probe
    assert b.state == "half_open"
    assert not b.allow()  # only one probe at a time
    b.failure()
    assert b.state == "open"
    clock.now += 1.0
    assert b.allow()
    b.success()
    assert b.state == "closed"
    assert b.allow()
    assert b.opened == 2


def test_breaker_trip_and_lost_probe() -> None:
    """trip() opens at once; a probe that never reports doesn't keep the breaker shut."""
    clock = FakeClock()
    b = Breaker(threshold=5, cooldown=1.0, clock=clock)
    b.trip()
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()
    clock.now += 1.0
    assert b.allow()  # the first probe vanished: let another one through


# --- the in-process LRU ---------------------------------------------------------------------


def entry(value: Any, ttl: float = 60.0) -> Any:
    """An encoded entry expiring in ``ttl`` seconds."""
    return encode_entry(value, expires_at=time.time() + ttl, cost=0.001, ttl=ttl)


def test_memory_lru_bounds() -> None:
    """The LRU keeps at most max_entries and max_bytes, dropping the least recently used."""
    m = MemoryCache(max_entries=3, max_bytes=10_000)
    for k in "abc":
        m.put(k, entry(k))
    m.get("a")
    m.put("d", entry("d"))
    assert m.get("b") is None
    assert all(m.get(k) is not None for k in "acd")
    m2 = MemoryCache(max_entries=100, max_bytes=500)
    for i in range(10):
        m2.put(str(i), entry("x" * 90))
    assert m2.stats()["bytes"] <= 500
    assert m2.get("9") is not None and m2.get("0") is None


def test_memory_ttl_and_refused_fills() -> None:
    """Expired entries vanish; a fill that started before an invalidation of its key is refused."""
    m = MemoryCache()
    m.put("t", entry("x", ttl=0.05))
    time.sleep(0.08)
    assert m.get("t") is None
    since = m.mark()
    lease = m.acquire("k", since=since, lease_ms=1000)
    assert lease is not None
    m.invalidate(["k"])
    assert not m.fill(lease, entry("stale"))
    other = m.acquire("j", since=since, lease_ms=1000)
    assert other is not None and m.fill(other, entry("fine"))  # other keys are not affected
    m.invalidate([f"x{i}" for i in range(5000)])  # the log overflows: old fills are refused
    assert m.changed_since("j", since)


def test_memory_returns_a_copy_of_the_loaded_value() -> None:
    """What the loader returned and what the cache keeps are different objects."""
    cache = build_cache(None, schema=new_schema())
    row = {"tags": ["a"]}
    assert cache.get_or_load("prompt", ["c"], lambda: row) is row
    row["tags"].append("mutated by the caller")
    assert cache.get_or_load("prompt", ["c"], Loader()) == {"tags": ["a"]}


# --- settings, URLs, credentials, TLS --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cluster", "expect"),
    [
        ("redis://127.0.0.1:6380/2", False, "redis://127.0.0.1:6380/2"),
        ("rediss://cache.example.com", False, "rediss://cache.example.com:6379/0"),
        ("redis://127.0.0.1:7000", True, "redis://127.0.0.1:7000/0 (cluster)"),
        ("redis+cluster://10.0.0.1:7000", False, "redis://10.0.0.1:7000/0 (cluster)"),
        ("redis://a:7000,b:7001/0", False, "redis://a:7000,b:7001/0 (cluster)"),
        ("redis://[::1]:6390", False, "redis://::1:6390/0"),
    ],
)
def test_redis_url_forms(url: str, cluster: bool, expect: str) -> None:
    """Single node, TLS, cluster by flag, by scheme or by several hosts, IPv6."""
    assert parse_redis_url(url, cluster=cluster).describe() == expect


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2-secret@127.0.0.1:6379/0",
        "redis://user:hunter2-secret@127.0.0.1:6379/0",
        "redis://user@127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0?password=hunter2-secret",
        "http://127.0.0.1:6379",
        "redis+cluster://127.0.0.1:7000/3",
        "redis://127.0.0.1:99999",
        "redis://127.0.0.1/x",
    ],
)
def test_redis_url_rejects_credentials_and_nonsense(url: str) -> None:
    """Credentials in the URL, unknown schemes, bad ports and cluster db>0 are config errors."""
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert "hunter2" not in info.value.one_line()


def test_password_over_plain_tcp_to_remote_host_is_refused() -> None:
    """A password would cross the network in clear: rediss:// is required off loopback."""
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://cache.internal:6379", password_set=True)
    assert "rediss://" in info.value.one_line()
    parse_redis_url("redis://127.0.0.1:6379", password_set=True)
    parse_redis_url("rediss://cache.internal:6379", password_set=True)


def test_make_cache_from_settings(tmp_path: Path, redis_server: Redis) -> None:
    """Without AFDB_REDIS_URL the in-process cache is the cache; with it, two levels."""
    plain = make_cache(Settings.load("dev", base_dir=tmp_path), schema="0002")
    assert isinstance(plain.backend, MemoryCache)
    assert plain.options.ttl == 300.0
    plain.close()
    settings = Settings.load("dev", base_dir=tmp_path, redis_url=redis_server.url, cache_ttl=5)
    two = make_cache(settings)
    try:
        assert isinstance(two.backend, LayeredCache)
        assert two.options.ttl == 5
        assert two.schema.isalnum()
        assert two.get_or_load("prompt", ["s"], lambda: 1) == 1
    finally:
        two.close()


ACL = "user default off\nuser cacheuser on >{pw} ~afdb:* &afdb:* +@all -@dangerous +info\n"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[Redis, str]]:
    """A Redis that only lets `cacheuser` in (ACL file, so the password is not in argv)."""
    password = "s3cret-Pa55-not-in-logs"
    acl = tmp_path / "users.acl"
    acl.write_text(ACL.format(pw=password))
    acl.chmod(0o600)
    server = start_redis(tmp_path, args=["--aclfile", str(acl)])
    try:
        yield server, password
    finally:
        server.stop()


def test_acl_user_and_password(
    acl_redis: tuple[Redis, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ACL credentials from the settings work; a wrong password fails open and leaks nowhere."""
    server, password = acl_redis
    settings = Settings.load(
        "dev",
        base_dir=tmp_path,
        redis_url=server.url,
        redis_username="cacheuser",
        redis_password=SecretStr(password),
    )
    good = make_cache(settings, schema=new_schema())
    try:
        assert good.get_or_load("prompt", ["acl"], lambda: "v") == "v"
        assert redis_client(good).exists(good.key("prompt", ["acl"])) == 1
        assert password not in repr(good) and password not in str(cache_stats(good))
    finally:
        good.close()
    caplog.set_level(logging.DEBUG, logger="autoforge_data.cache")
    wrong = settings.model_copy(update={"redis_password": SecretStr(password + "-wrong")})
    bad = make_cache(wrong, schema=new_schema())
    try:
        load = Loader("from-db")
        for _ in range(5):
            assert bad.get_or_load("prompt", ["acl"], load) == "from-db"
        assert bad.metrics.count("error", level="l2") >= 3
        assert isinstance(bad.backend, LayeredCache) and bad.backend.l2.breaker.state == "open"
        text = repr(bad) + str(cache_stats(bad)) + caplog.text
        assert password not in text
        assert "AuthenticationError" in caplog.text or "WRONGPASS" in caplog.text
    finally:
        bad.close()


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "afdb test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    """rediss:// with AFDB_REDIS_TLS_CA verifies the server; without the CA it fails open."""
    ca, cert, key = _tls_files(tmp_path)
    port = free_port()
    args = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    server = start_redis(tmp_path, args=args)
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        trusted = make_cache(
            Settings.load("dev", base_dir=tmp_path, redis_url=url, redis_tls_ca=ca),
            schema=new_schema(),
        )
        untrusted = make_cache(
            Settings.load("dev", base_dir=tmp_path, redis_url=url), schema=new_schema()
        )
        try:
            assert trusted.get_or_load("prompt", ["tls"], lambda: "v") == "v"
            assert redis_client(trusted).exists(trusted.key("prompt", ["tls"])) == 1
            assert untrusted.get_or_load("prompt", ["tls"], lambda: "db") == "db"
            assert untrusted.metrics.count("error", level="l2") >= 1
        finally:
            trusted.close()
            untrusted.close()
    finally:
        server.stop()


# --- invalidation through a real unit of work -----------------------------------------------


def test_invalidation_runs_after_commit_only(tmp_path: Path) -> None:
    """after_commit invalidates once COMMIT returned, and never when the unit rolls back."""
    db = Database(Settings.load("dev", base_dir=tmp_path, data_dir=tmp_path / "data"))
    cache = build_cache(None, schema=new_schema())
    try:
        with UnitOfWork(db, write=True) as uow:
            uow.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
            uow.execute("INSERT INTO kv VALUES ('a', 'old')")
            uow.commit()

        def read() -> str:
            with UnitOfWork(db) as uow:
                return str(uow.fetchone("SELECT v FROM kv WHERE k = 'a'")[0])

        assert cache.get_or_load("kv", ["a"], read) == "old"
        with UnitOfWork(db, write=True) as uow:
            uow.execute("UPDATE kv SET v = 'rolled back' WHERE k = 'a'")
            cache.after_commit(uow, "kv", ["a"])
        assert cache.get_or_load("kv", ["a"], read) == "old"  # nothing was invalidated
        with UnitOfWork(db, write=True) as uow:
            uow.execute("UPDATE kv SET v = 'new' WHERE k = 'a'")
            cache.after_commit(uow, "kv", ["a"])
            assert cache.get_or_load("kv", ["a"], read) == "old"  # not before the commit
            uow.commit()
        assert cache.get_or_load("kv", ["a"], read) == "new"
    finally:
        cache.close()
        db.close()


# --- metrics --------------------------------------------------------------------------------


def test_metrics_labels_stay_bounded_and_export() -> None:
    """Past MAX_KINDS kinds are reported as `other`; samples follow Prometheus conventions."""
    m = Metrics()
    for i in range(MAX_KINDS + 10):
        m.inc(f"k{i}", "l1", "hit")
    kinds = {c["kind"] for c in m.snapshot()["counters"]}
    assert len(kinds) == MAX_KINDS + 1 and "other" in kinds
    m.observe("k0", "l2", 0.0003)
    m.observe("k0", "l2", 0.2)
    samples = list(m.samples())
    buckets = [s for s in samples if s[0] == "afdb_cache_latency_seconds_bucket"]
    assert buckets[-1][1]["le"] == "+Inf" and buckets[-1][2] == 2.0
    assert m.percentile("k0", "l2", 0.5) == 0.0005
    assert any(s[0] == "afdb_cache_events_total" for s in samples)


def test_cluster_keys_of_one_entry_share_a_slot(redis_cluster: Cluster) -> None:
    """A value and its lease hash to the same Cluster slot (the Lua fill needs both)."""
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        cache = build_cache(redis_cluster.url, schema=new_schema(), cluster=True)
        key = cache.key("prompt", ["slot"])
        assert client.keyslot(key) == client.keyslot(key + ":lease")
        slots = {client.keyslot(cache.key("prompt", [i])) for i in range(50)}
        assert len(slots) > 10  # entries spread over the cluster
        cache.close()
    finally:
        client.close()
