"""Prometheus metrics for one app: a private registry, the hooks that feed it, and gauges.

Every app gets its own :class:`Observability` (``prometheus_client.CollectorRegistry``, never the
process-global one), so two apps in one process (tests) keep separate numbers. What feeds it:

* HTTP requests: the ASGI middleware in :mod:`autoforge_data.api.metrics` (route *template*,
  method and status class; never the raw path).
* Database statements: the unit of work's statement hook (:func:`db.uow.add_statement_hook`) and
  SQLAlchemy cursor events on the app's engine (Alembic, health, admin), by kind
  (select/insert/update/delete/other); pool use from both pools.
* Cache: the cache's own :class:`~autoforge_data.cache.metrics.Metrics` samples, exported as they
  are at scrape time (:class:`CacheCollector`).
* Search: the vector index and the embedders are wrapped by :func:`instrument_search` once the
  app's search context is open (latency and candidates scanned per backend, embedding latency).
* Gauges that need I/O (journal lag, WAL size, replica lag, readiness, backup age) are refreshed
  by :func:`refresh_gauges` in a worker thread right before a scrape, each probe bounded.

Label sets are bounded by construction: fixed vocabularies, or a cap after which new values are
reported as ``other`` (:class:`BoundedLabel`). No path, DSN, token or error text is ever a label.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import event

from autoforge_data import __version__
from autoforge_data.db import uow as uow_module

log = logging.getLogger(__name__)

STATEMENT_KINDS = ("select", "insert", "update", "delete", "other")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds; fine at the bottom (embedded reads take tens of µs), up to 10 s (a hung server).
LATENCY_BUCKETS = (
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
HTTP_BUCKETS = (0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCANNED_BUCKETS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)
MAX_ROUTES = 200  # an app has far fewer; a cap keeps a bug from growing series without bound


class BoundedLabel:
    """Remembers at most ``limit`` distinct values; later new values become ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self.limit:
                return "other"
            self._seen.add(value)
            return value


def statement_kind(kind_or_sql: str) -> str:
    """select/insert/update/delete/other from a unit-of-work kind or a statement's first word."""
    word = kind_or_sql.lstrip(" \t\r\n(").split(None, 1)[0].lower() if kind_or_sql.strip() else ""
    if word in ("select", "with", "pragma"):
        return "select"
    return word if word in STATEMENT_KINDS else "other"


def status_class(status: int) -> str:
    """'2xx', '4xx'... (a bounded label for any status code)."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class Observability:
    """One app's metrics registry and the metrics in it (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.route_label = BoundedLabel(MAX_ROUTES)
        self.http_latency = Histogram(
            "afdb_http_request_duration_seconds", "HTTP request latency by route template.",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.http_requests = Counter(
            "afdb_http_requests", "HTTP responses by route template and status class.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.http_in_flight = Gauge(
            "afdb_http_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.statement_latency = Histogram(
            "afdb_db_statement_duration_seconds", "Database statement latency by kind.",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.statement_errors = Counter(
            "afdb_db_statement_errors", "Database statements that raised, by kind.", ["kind"],
            registry=r,
        )  # fmt: skip
        self.pool = Gauge(
            "afdb_db_pool_connections", "Database connections by pool and state.",
            ["pool", "state"], registry=r,
        )  # fmt: skip
        self.search_latency = Histogram(
            "afdb_vector_search_duration_seconds", "Vector index search latency by backend.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.scanned = Histogram(
            "afdb_vector_candidates_scanned", "Candidates scored per vector search, by backend.",
            ["backend"], buckets=SCANNED_BUCKETS, registry=r,
        )  # fmt: skip
        self.strategy_label = BoundedLabel(16)
        self.searches = Counter(
            "afdb_vector_searches", "Vector searches by backend and plan.",
            ["backend", "strategy"], registry=r,
        )  # fmt: skip
        self.model_label = BoundedLabel(8)
        self.embed_latency = Histogram(
            "afdb_embedding_duration_seconds", "Embedding model latency per call.",
            ["model", "use"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.embedded_texts = Counter(
            "afdb_embedded_texts", "Texts sent to an embedding model.", ["model", "use"],
            registry=r,
        )  # fmt: skip
        self.gauges = ProbeGauges()
        r.register(self.gauges)
        self.cache_collector = CacheCollector()
        r.register(self.cache_collector)
        info = Gauge(
            "afdb_build_info", "Version, profile, database mode and index backend (value 1).",
            ["version", "profile", "mode", "index_backend"], registry=r,
        )  # fmt: skip
        self._info = info
        self.started = time.time()
        # labelled children looked up once: a statement costs one dict lookup and an observe
        self._statement_children: dict[str, Any] = {
            kind: self.statement_latency.labels(kind) for kind in STATEMENT_KINDS
        }
        for uow_kind in ("begin", "commit", "ddl", "query", "stable"):
            self._statement_children[uow_kind] = self._statement_children["other"]
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        Gauge("afdb_start_time_seconds", "When this app started (Unix time).", registry=r).set(
            self.started
        )

    def set_info(self, profile: str, mode: str, index_backend: str) -> None:
        """Fill afdb_build_info (all values come from validated settings: fixed vocabularies)."""
        self._info.labels(__version__, profile, mode, index_backend).set(1)

    def observe_statement(self, kind: str, seconds: float) -> None:
        """One database statement of ``kind`` (a unit-of-work kind or SQL text) took ``seconds``."""
        child = self._statement_children.get(kind)
        if child is None:
            child = self._statement_children[statement_kind(kind)]
        child.observe(seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request finished."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            method = method if method in HTTP_METHODS else "other"
            route = self.route_label(route)
            children = (
                self.http_latency.labels(method, route),
                self.http_requests.labels(method, route, status_class(status)),
            )
            if len(self._request_children) < 4 * MAX_ROUTES:  # raw methods are client input
                self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()


# --- database -------------------------------------------------------------------------------------

_subscribers: weakref.WeakSet[Observability] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_installed: list[bool] = []  # non-empty once the dispatcher is registered


def _dispatch(kind: str, seconds: float) -> None:
    for obs in list(_subscribers):
        obs.observe_statement(kind, seconds)


def subscribe_statements(obs: Observability) -> Callable[[], None]:
    """Feed ``obs`` every unit-of-work statement; returns the unsubscribe function.

    The unit of work's hook list is process-wide and has no removal, so one dispatcher is
    installed once and apps subscribe to it (in a process with two apps, both see every
    statement of the process: one app per process is the deployment shape).
    """
    with _hook_lock:
        if not _hook_installed:
            uow_module.add_statement_hook(_dispatch)
            _hook_installed.append(True)
        _subscribers.add(obs)
    return lambda: _subscribers.discard(obs)


def watch_engine(obs: Observability, engine: Any) -> Callable[[], None]:
    """Time every statement of a SQLAlchemy engine (and count errors); returns the remover."""

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("afdb_t0", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        starts = conn.info.get("afdb_t0")
        if starts:
            obs.observe_statement(statement, time.perf_counter() - starts.pop())

    def error(ctx: Any) -> None:
        starts = ctx.connection.info.get("afdb_t0") if ctx.connection is not None else None
        if starts:
            starts.pop()
        obs.statement_errors.labels(statement_kind(ctx.statement or "")).inc()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", error)

    def remove() -> None:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        event.remove(engine, "handle_error", error)

    return remove


def pool_usage(pool: Any) -> tuple[int, int, int] | None:
    """(in use, idle, size) of one of our pools, or None if it does not say (the replica's)."""
    slots = getattr(pool, "_slots", None)
    idle = getattr(pool, "_idle", None)
    free = getattr(slots, "_value", None)
    size = getattr(slots, "_initial_value", None)
    if idle is None or free is None or size is None:
        return None
    return int(size) - int(free), len(idle), int(size)


def update_pools(obs: Observability, db: Any) -> None:
    """Set afdb_db_pool_connections from the hot-path pools and the SQLAlchemy pool."""
    pools = {"reads": db.reads, "writes": db.writes}
    if db.writes is db.reads:
        pools = {"all": db.writes}
    for name, pool in pools.items():
        usage = pool_usage(pool)
        if usage is not None:
            in_use, idle, size = usage
            obs.pool.labels(name, "in_use").set(in_use)
            obs.pool.labels(name, "idle").set(idle)
            obs.pool.labels(name, "size").set(size)
    sa_pool = db.engine.pool
    if hasattr(sa_pool, "checkedout"):
        obs.pool.labels("engine", "in_use").set(sa_pool.checkedout())
        obs.pool.labels("engine", "idle").set(sa_pool.checkedin())
        obs.pool.labels("engine", "size").set(sa_pool.size())


# --- cache ----------------------------------------------------------------------------------------


class CacheCollector(Collector):
    """Exports a cache's own counters and histograms (``Metrics.samples()``) at scrape time."""

    _TYPES: ClassVar[dict[str, tuple[str, str]]] = {
        "afdb_cache_events_total": ("afdb_cache_events", "counter"),
        "afdb_cache_latency_seconds_bucket": ("afdb_cache_latency_seconds", "histogram"),
        "afdb_cache_latency_seconds_sum": ("afdb_cache_latency_seconds", "histogram"),
        "afdb_cache_latency_seconds_count": ("afdb_cache_latency_seconds", "histogram"),
    }
    _HELP: ClassVar[dict[str, str]] = {
        "afdb_cache_events": "Cache events (hit, miss, error...) by kind and level.",
        "afdb_cache_latency_seconds": "Cache hit latency by kind and level.",
    }

    def __init__(self) -> None:
        self.metrics: Any = None  # the cache's Metrics, once the app has a cache

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families exist once the cache has counted something."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One metric family per name, with the cache's samples as they are now."""
        families: dict[str, Metric] = {}
        if self.metrics is None:
            return iter(())
        for name, labels, value in self.metrics.samples():
            family_name, kind = self._TYPES.get(name, (None, None))
            if family_name is None or kind is None:
                continue
            family = families.get(family_name)
            if family is None:
                family = families[family_name] = Metric(family_name, self._HELP[family_name], kind)
            family.add_sample(name, labels, value)
        return iter(families.values())


# --- search ---------------------------------------------------------------------------------------


class InstrumentedIndex:
    """A VectorIndex that times each search and records candidates scanned and the plan."""

    def __init__(self, inner: Any, obs: Observability) -> None:
        self.inner = inner
        self.name = inner.name
        self._obs = obs

    def search(self, query: Any, k: int, flt: Any) -> Any:
        """The inner index's search, measured."""
        start = time.perf_counter()
        hits = self.inner.search(query, k, flt)
        backend = self.name if self.name in ("memory", "exact", "libsql") else "other"
        self._obs.search_latency.labels(backend).observe(time.perf_counter() - start)
        self._obs.scanned.labels(backend).observe(hits.scanned)
        self._obs.searches.labels(backend, self._obs.strategy_label(str(hits.strategy))).inc()
        return hits

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class InstrumentedEmbedder:
    """An Embedder that times each call to the model it wraps."""

    def __init__(self, inner: Any, obs: Observability, use: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.metric = inner.metric
        self.normalized = inner.normalized
        self._obs = obs
        self._labels = (obs.model_label(str(inner.name)), use)

    def embed(self, texts: Any) -> Any:
        """The inner embedder's vectors, measured."""
        start = time.perf_counter()
        out = self.inner.embed(texts)
        self._obs.embed_latency.labels(*self._labels).observe(time.perf_counter() - start)
        self._obs.embedded_texts.labels(*self._labels).inc(len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _innermost_holder(embedder: Any) -> Any:
    """The wrapper (LRU, cache-aside) whose ``inner`` is the model itself."""
    holder = embedder
    while hasattr(holder.inner, "inner"):
        holder = holder.inner
    return holder


def instrument_search(ctx: Any, obs: Observability) -> None:
    """Wrap a SearchContext's index and embedders once (idempotent; attribute swaps only)."""
    if getattr(ctx, "_afdb_observed", False):
        return
    ctx.index = InstrumentedIndex(ctx.index, obs)
    if ctx.embedder is not None and not isinstance(ctx.embedder, InstrumentedEmbedder):
        ctx.embedder = InstrumentedEmbedder(ctx.embedder, obs, "index")
    query = ctx.query_embedder
    if query is not None and hasattr(query, "inner"):
        holder = _innermost_holder(query)
        if not isinstance(holder.inner, InstrumentedEmbedder):
            holder.inner = InstrumentedEmbedder(holder.inner, obs, "query")
    ctx._afdb_observed = True


# --- gauges refreshed before a scrape -------------------------------------------------------------


GAUGES: dict[str, str] = {
    "afdb_ready": "1 when /health/ready answers 200 (ok or degraded), 0 when it answers 503.",
    "afdb_health_status": "Per-component health: 1 ok, 0.5 degraded, 0 failing.",
    "afdb_index_journal_lag": "Vector journal entries not yet applied to the in-process index.",
    "afdb_index_vectors": "Vectors in the in-process search index.",
    "afdb_index_refresh_age_seconds": "Seconds since the index last applied the journal.",
    "afdb_replica_lag_seconds": "Seconds since the embedded replica last synced (+Inf: never).",
    "afdb_replica_sync_failures": "Failed replica syncs since start.",
    "afdb_wal_bytes": "Size of the embedded database's WAL file.",
    "afdb_database_bytes": "Size of the embedded database file.",
    "afdb_backup_age_seconds": "Seconds since the last successful backup (+Inf: none).",
    "afdb_backup_last_success": "1 if the last backup succeeded, 0 if it failed.",
    "afdb_backup_interval_seconds": "The backup schedule (AFDB_BACKUP_EVERY).",
    "afdb_probe_success": "1 when a scrape-time probe answered in time.",
}


class ProbeGauges(Collector):
    """Gauges that exist only once measured (a plain Gauge would export a misleading 0: a backup
    age of 0 in a deployment without backups); set by the scrape's probes."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._lock = threading.Lock()

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set gauge ``name`` (one of :data:`GAUGES`) for these labels."""
        if name not in GAUGES:
            raise KeyError(name)
        with self._lock:
            self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)

    def get(self, name: str, **labels: str) -> float | None:
        """The current value, or None if never set."""
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted(labels.items())))

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: a gauge appears once it has a value."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every gauge that has a value."""
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        for name, series in sorted(snapshot.items()):
            family = Metric(name, GAUGES[name], "gauge")
            for labels, value in sorted(series.items()):
                family.add_sample(name, dict(labels), value)
            yield family


def file_sizes(path: Path | None) -> tuple[int, int] | None:
    """(database bytes, WAL bytes) of a local file (0 for a missing WAL), None when remote."""
    if path is None:
        return None
    try:
        main = os.stat(path).st_size
    except OSError:
        return None
    try:
        wal = os.stat(f"{path}-wal").st_size
    except OSError:
        wal = 0
    return main, wal


def set_health(gauges: ProbeGauges, status: str, checks: dict[str, dict[str, Any]]) -> None:
    """Mirror a readiness answer into afdb_ready and afdb_health_status."""
    gauges.set("afdb_ready", 0 if status == "unavailable" else 1)
    values = {"ok": 1.0, "degraded": 0.5}
    for name, check in checks.items():
        gauges.set("afdb_health_status", values.get(str(check.get("status")), 0.0), component=name)
