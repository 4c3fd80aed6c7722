"""The cache: an in-process LRU, optionally in front of Redis (one node or a Cluster).

``make_cache(settings)`` builds it at the edge (app factory, CLI): without ``AFDB_REDIS_URL``
the in-process cache is the whole cache; with it, two levels kept coherent through pub/sub.
Use cases call ``cache.get_or_load(kind, key_parts, loader, ttl)`` and, inside their unit of
work, ``cache.after_commit(uow, kind, key_parts)`` for what they change (see :mod:`.aside`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoforge_data.cache.aside import AsideOptions, CacheAside, Codec
from autoforge_data.cache.base import Cache, Hit, channel, check_kind, kind_prefix, namespace
from autoforge_data.cache.breaker import Breaker
from autoforge_data.cache.layered import LayeredCache
from autoforge_data.cache.memory import MemoryCache
from autoforge_data.cache.metrics import Metrics
from autoforge_data.cache.redis_cache import RedisCache
from autoforge_data.cache.target import RedisTarget, parse_redis_url

if TYPE_CHECKING:  # settings.py may import cache.target to validate AFDB_REDIS_URL
    from autoforge_data.settings import Settings

__all__ = [
    "AsideOptions",
    "Breaker",
    "Cache",
    "CacheAside",
    "Codec",
    "Hit",
    "LayeredCache",
    "MemoryCache",
    "Metrics",
    "RedisCache",
    "RedisTarget",
    "cache_stats",
    "flush",
    "make_cache",
    "parse_redis_url",
]


def make_cache(
    settings: Settings,
    *,
    schema: str | None = None,
    metrics: Metrics | None = None,
    options: AsideOptions | None = None,
    listen: bool = True,
) -> CacheAside:
    """The cache for these settings; ``schema`` defaults to the code's migration head.

    ``listen=False`` (one-shot CLI commands) starts no pub/sub thread; L1 then stays unused.
    Build it after forking (one per worker process): it owns sockets and a thread.
    """
    if schema is None:
        from autoforge_data.db.migrate import code_head

        schema = code_head()
    metrics = metrics or Metrics()
    options = options or AsideOptions(ttl=settings.cache_ttl)
    l1 = MemoryCache(
        max_entries=settings.cache_l1_entries,
        max_value_bytes=settings.cache_max_value_bytes,
        metrics=metrics,
    )
    backend: Cache = l1
    if settings.redis_url:
        l2 = make_redis(settings, schema=schema, metrics=metrics)
        backend = LayeredCache(l1, l2, listen=listen)
    return CacheAside(backend, schema=schema, metrics=metrics, options=options)


def make_redis(settings: Settings, *, schema: str, metrics: Metrics | None = None) -> RedisCache:
    """The Redis level alone, from the settings (validated here: see parse_redis_url)."""
    if not settings.redis_url:
        raise ValueError("AFDB_REDIS_URL is not set")
    password = settings.redis_password
    target = parse_redis_url(
        settings.redis_url,
        cluster=settings.redis_cluster,
        password_set=bool(password and password.get_secret_value()),
    )

    return RedisCache(
        target,
        username=settings.redis_username,
        password=password,
        tls_ca=settings.redis_tls_ca,
        timeout=settings.redis_timeout,
        pool_size=settings.redis_pool_size,
        max_value_bytes=settings.cache_max_value_bytes,
        channel=channel(schema),
        metrics=metrics,
    )


def cache_stats(cache: CacheAside, *, count_keys: bool = False) -> dict[str, Any]:
    """What `afdb cache stats` prints: backend state, hit ratio, counters, latencies, and with
    ``count_keys`` our Redis keys per kind (a SCAN of our prefix, capped at 100,000 keys)."""
    stats: dict[str, Any] = {
        "schema": cache.schema,
        "hit_ratio": round(cache.metrics.hit_ratio(), 4),
        "backend": cache.backend.stats(),
        "metrics": cache.metrics.snapshot(),
    }
    redis_level = _redis_level(cache.backend)
    if count_keys and redis_level is not None:
        counts, truncated = redis_level.count_keys(namespace(cache.schema))
        stats["keys"] = {"per_kind": counts, "truncated": truncated}
    return stats


def _redis_level(backend: Cache) -> RedisCache | None:
    if isinstance(backend, LayeredCache):
        return backend.l2
    return backend if isinstance(backend, RedisCache) else None


def flush(cache: CacheAside, kind: str | None = None) -> int:
    """Delete our keys (one kind, or all of this schema revision); returns how many."""
    prefix = kind_prefix(cache.schema, check_kind(kind)) if kind else namespace(cache.schema)
    return cache.backend.flush(prefix)
