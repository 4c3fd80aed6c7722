"""Cache-aside for the use cases: ``get_or_load(kind, key_parts, loader, ttl)``.

What it guarantees, and how:

- **No stale re-fill.** Before loading, the caller takes a *lease* on the key (in Redis: SET NX
  PX with a random token; in-process: the invalidation sequence number). A writer's
  invalidation, run after its commit (:meth:`CacheAside.after_commit`), deletes the value *and*
  the lease; the fill is a Lua compare-and-set on the lease, so a reader that loaded the old row
  before the invalidation cannot store it afterwards.
- **One load per key.** Callers of one process share one in-flight load (single-flight); across
  processes the lease holder loads and the others poll briefly for its value (``wait``), then
  load themselves without storing.
- **No expiry stampede.** Hot keys are recomputed early by one caller, with probability rising
  as expiry nears (XFetch: ``now - cost * beta * ln(U) >= expiry``), while the others keep
  being served; TTLs are shortened by a random ``jitter`` fraction so keys don't expire together.
- **Fail-open.** The backends never raise because a store is down; the loader is the fallback.

Loader errors propagate to the caller (and to callers sharing its load); nothing is cached.
Values served from the cache are shared between callers: treat them as read-only, or pass a
:class:`Codec` whose ``load`` builds a fresh (or frozen) object per call.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

from autoforge_data.cache.base import (
    Cache,
    Entry,
    Hit,
    Lease,
    check_kind,
    derive_key,
    encode_entry,
)
from autoforge_data.cache.metrics import Metrics

T = TypeVar("T")


@dataclass(frozen=True)
class AsideOptions:
    """How cache-aside behaves; the defaults suit the use cases."""

    ttl: float = 300.0  # seconds, when get_or_load is not given one
    jitter: float = 0.1  # each TTL is shortened by up to this fraction, at random
    beta: float = 1.0  # XFetch eagerness; 0 turns early recomputation off
    lease_ms: int = 5000  # the fill lease; a load slower than this is not stored
    wait: float = 1.0  # how long a miss waits for another process's load of the same key
    join_timeout: float = 30.0  # how long a caller waits for its own process's load
    single_flight: bool = True
    protect: bool = True  # False: plain cache-aside (no leases) - for tests' sensitivity arms


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a loader's result becomes JSON and back (e.g. a frozen dataclass and its dict)."""

    dump: Callable[[T], Any]
    load: Callable[[Any], T]


class UnitOfWorkLike(Protocol):
    """What :meth:`CacheAside.after_commit` needs: db/uow.py's ``UnitOfWork``."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after COMMIT returned."""
        ...


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Callers asking for the same key at the same time share one load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self.completed = 0  # loads finished so far (a leader re-checks the cache if it moved)

    def join(self, key: str) -> tuple[_Flight, bool]:
        """The flight of ``key`` and whether the caller leads it (and must finish it)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def finish(
        self, key: str, flight: _Flight, value: Any = None, error: BaseException | None = None
    ) -> None:
        """Publish the result to the followers and retire the flight."""
        flight.value, flight.error = value, error
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            self.completed += 1
        flight.done.set()

    def detach(self, key: str) -> None:
        """After an invalidation, new callers must not join a load that began before it."""
        with self._lock:
            self._flights.pop(key, None)


class CacheAside:
    """The cache-aside helper over one backend; see the module docstring."""

    def __init__(
        self,
        backend: Cache,
        *,
        schema: str,
        metrics: Metrics | None = None,
        options: AsideOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.schema = schema
        self.metrics = metrics or Metrics()
        self.options = options or AsideOptions()
        self._rng = rng or random.Random()  # noqa: S311 (jitter and XFetch, not secrets)
        self._flights = SingleFlight()
        derive_key(schema, "probe", [])  # reject a bad schema revision now, not per call

    def __repr__(self) -> str:
        return f"CacheAside({self.backend!r}, schema={self.schema!r})"

    def key(self, kind: str, key_parts: Any) -> str:
        """The backend key of ``key_parts`` for ``kind``."""
        return derive_key(self.schema, kind, key_parts)

    # --- reads ------------------------------------------------------------------------------

    def get_or_load(
        self,
        kind: str,
        key_parts: Any,
        loader: Callable[[], T],
        ttl: float | None = None,
        *,
        codec: Codec[T] | None = None,
    ) -> T:
        """The cached value of (kind, key_parts), or ``loader()``'s result, cached for ``ttl``."""
        key = self.key(kind, key_parts)
        start = time.perf_counter()
        seen = self._flights.completed
        since = self.backend.mark()
        hit = self.backend.get(key)
        if hit is not None:
            self.metrics.hit(kind, hit.level, time.perf_counter() - start)
            if self._refresh_due(hit):
                return self._refresh(_Request(kind, key, loader, ttl, codec), hit)
            return codec.load(hit.value) if codec is not None else cast(T, hit.value)
        self.metrics.inc(kind, "cache", "miss")
        req = _Request(kind, key, loader, ttl, codec)
        if not self.options.single_flight:
            return self._load(req, since)
        flight, leader = self._flights.join(req.key)
        if not leader:
            return self._follow(req, flight, since)
        try:
            value = self._lead(req, since, seen)
        except BaseException as exc:
            self._flights.finish(req.key, flight, error=exc)
            raise
        self._flights.finish(req.key, flight, value)
        return value

    def _lead(self, req: _Request[T], since: int, seen: int) -> T:
        if self._flights.completed != seen:  # a load finished meanwhile: it may have filled
            since = self.backend.mark()
            hit = self.backend.get(req.key)
            if hit is not None:
                return req.decode(hit.value)
        return self._load(req, since)

    def _follow(self, req: _Request[T], flight: _Flight, since: int) -> T:
        self.metrics.inc(req.kind, "cache", "flight_join")
        if not flight.done.wait(self.options.join_timeout):
            return self._load(req, since)
        if flight.error is not None:
            raise flight.error
        return cast(T, flight.value)

    def _refresh_due(self, hit: Hit) -> bool:
        spread = hit.cost * self.options.beta
        if spread <= 0:
            return False
        remaining = hit.expires_at - time.time()
        if remaining > 20 * spread:  # P(refresh) = exp(-remaining / spread) < 1e-8: skip the RNG
            return False
        return -spread * math.log(1.0 - self._rng.random()) >= remaining

    def _refresh(self, req: _Request[T], hit: Hit) -> T:
        """Recompute before expiry: one caller per process and one per cluster (the lease)."""
        flight, leader = self._flights.join(req.key)
        if not leader:
            return req.decode(hit.value)
        try:
            since = self.backend.mark()
            lease = self.backend.acquire(req.key, since=since, lease_ms=self.options.lease_ms)
            if lease is None or not lease.shared:
                value = req.decode(hit.value)
            else:
                self.metrics.inc(req.kind, "cache", "early_refresh")
                value = self._call(req, lease)
        except BaseException as exc:
            self._flights.finish(req.key, flight, error=exc)
            raise
        self._flights.finish(req.key, flight, value)
        return value

    def _load(self, req: _Request[T], since: int) -> T:
        """Take the lease (or wait for its holder's value), load, fill."""
        lease: Lease | None = None
        if self.options.protect:
            lease = self.backend.acquire(req.key, since=since, lease_ms=self.options.lease_ms)
            if lease is None:
                hit, lease = self._await_holder(req)
                if hit is not None:
                    return req.decode(hit.value)
        return self._call(req, lease)

    def _await_holder(self, req: _Request[T]) -> tuple[Hit | None, Lease | None]:
        """Another process holds the lease: poll for its value, or for the lease to free up."""
        self.metrics.inc(req.kind, "cache", "lease_wait")
        deadline = time.monotonic() + self.options.wait
        delay = 0.005
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
            since = self.backend.mark()
            hit = self.backend.get(req.key)
            if hit is not None:
                return hit, None
            lease = self.backend.acquire(req.key, since=since, lease_ms=self.options.lease_ms)
            if lease is not None:
                hit = self.backend.get(req.key)  # the holder may have filled just before
                if hit is not None:
                    self.backend.release(lease)
                    return hit, None
                return None, lease
        self.metrics.inc(req.kind, "cache", "lease_wait_timeout")
        return None, None

    def _call(self, req: _Request[T], lease: Lease | None) -> T:
        """Run the loader, then store its result under ``lease`` (or plainly if unprotected)."""
        start = time.perf_counter()
        try:
            value = req.loader()
        except BaseException:
            if lease is not None:
                self.backend.release(lease)
            raise
        cost = time.perf_counter() - start
        self.metrics.observe(req.kind, "load", cost)
        self._store(req, value, cost, lease)
        return value

    def _store(self, req: _Request[T], value: T, cost: float, lease: Lease | None) -> None:
        if self.options.protect and (lease is None or not lease.shared):
            return  # no right to fill: someone else's load, or the store is unreachable
        entry = self._entry(req, value, cost)
        if entry is None:
            if lease is not None:
                self.backend.release(lease)
        elif lease is not None:
            self.backend.fill(lease, entry)
        else:
            self.backend.put(req.key, entry)

    def _entry(self, req: _Request[T], value: T, cost: float) -> Entry | None:
        """The encoded value with a jittered TTL; None (counted) if not JSON or too large."""
        ttl = req.ttl if req.ttl is not None else self.options.ttl
        life = ttl * (1.0 - self.options.jitter * self._rng.random())
        try:
            data = req.codec.dump(value) if req.codec is not None else value
            entry = encode_entry(data, expires_at=time.time() + life, cost=cost, ttl=life)
        except (TypeError, ValueError):
            self.metrics.inc(req.kind, "cache", "unencodable")
            return None
        if len(entry.payload) > self.backend.max_value_bytes:
            self.metrics.inc(req.kind, "cache", "oversize")
            return None
        return entry

    # --- writes -----------------------------------------------------------------------------

    def invalidate(self, kind: str, key_parts: Any) -> None:
        """Drop one cached value now (use :meth:`after_commit` inside a unit of work)."""
        self.invalidate_keys([self.key(kind, key_parts)])

    def invalidate_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Drop several (kind, key_parts) values in one round trip."""
        self.invalidate_keys([self.key(kind, parts) for kind, parts in items])

    def invalidate_keys(self, keys: Sequence[str]) -> None:
        """Drop backend keys: revoke leases, detach in-flight loads, tell other processes."""
        if not keys:
            return
        for key in keys:
            self._flights.detach(key)  # callers from now on start a load of their own
        self.backend.invalidate(keys)

    def after_commit(self, uow: UnitOfWorkLike, kind: str, key_parts: Any) -> None:
        """Invalidate (kind, key_parts) once ``uow`` has committed; never if it rolls back."""
        key = self.key(check_kind(kind), key_parts)  # bad input fails now, inside the use case
        uow.after_commit(lambda: self.invalidate_keys([key]))

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()


class _Request(NamedTuple, Generic[T]):
    """One get_or_load call's inputs, passed between the steps."""

    kind: str
    key: str
    loader: Callable[[], T]
    ttl: float | None
    codec: Codec[T] | None

    def decode(self, value: Any) -> T:
        return self.codec.load(value) if self.codec is not None else cast(T, value)
