"""The Redis level: redis-py + hiredis, one node or a Cluster, behind a circuit breaker.

Timeouts are short (``AFDB_REDIS_TIMEOUT``, 0.1 s) with one retry: redis-py's defaults turned a
hung Redis into a 58 s GET. Every call goes through :meth:`RedisCache._run`, which asks the
breaker first and turns a failure into a counted "miss"/"not stored": Redis never fails a
request. Credentials come from the settings (``AFDB_REDIS_USERNAME``/``AFDB_REDIS_PASSWORD``),
never from the URL, and appear in no repr, log line, error or metric.

Fills are checked in Redis by a Lua script: the value is stored only while the filler's lease
(``<key>:lease``, SET NX PX with a random token) is still there; invalidation deletes both the
value and the lease. An invalidation that cannot reach Redis is kept (bounded) and replayed
before this process trusts Redis again; those keys read as misses until then.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from pydantic import SecretStr
from redis import exceptions as rexc
from redis.cluster import RedisCluster

from autoforge_data.cache.base import Entry, Hit, Lease, decode_entry, key_kind, lease_key
from autoforge_data.cache.breaker import Breaker
from autoforge_data.cache.metrics import Metrics
from autoforge_data.cache.target import RedisTarget, connect
from autoforge_data.errors import Unavailable

log = logging.getLogger("autoforge_data.cache")
T = TypeVar("T")
Client = redis.Redis | RedisCluster
MAX_PENDING = 10_000
_SAFE_PREFIX = re.compile(r"afdb:v[A-Za-z0-9_.-]{1,40}:([a-z][a-z0-9_]{0,31}:)?\Z")

_FILL = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def is_transport(exc: Exception) -> bool | None:
    """True: Redis is unreachable or failing (counts for the breaker); False: Redis answered with
    an error or our pool is exhausted (counted only); None: not a Redis error at all."""
    if isinstance(exc, rexc.MaxConnectionsError | rexc.OutOfMemoryError):
        return False
    if isinstance(exc, rexc.ClusterDownError | rexc.ReadOnlyError | rexc.TryAgainError):
        return True
    if isinstance(exc, rexc.ResponseError):
        return False
    if isinstance(exc, rexc.RedisError | rexc.RedisClusterException | OSError):
        return True
    return None


class _Down(Exception):
    """Internal: the call did not reach Redis or failed; the caller answers a miss."""

    def __init__(self, transport: bool = True) -> None:
        super().__init__()
        self.transport = transport  # False: Redis answered with an error (OOM, ...)


class RedisCache:
    """The Redis level (one node or a Cluster); see the module docstring."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        tls_ca: Path | None = None,
        timeout: float = 0.1,
        pool_size: int = 32,
        max_value_bytes: int = 1_048_576,
        channel: str | None = None,
        metrics: Metrics | None = None,
        breaker: Breaker | None = None,
        health_check_interval: int = 10,
    ) -> None:
        self.target = target
        self.max_value_bytes = max_value_bytes
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.metrics = metrics or Metrics()
        self.breaker = breaker or Breaker()
        self._username = username
        self._password = password
        self._tls_ca = tls_ca
        self._timeout = timeout
        # calls in flight are bounded by a semaphore (waiting at most `timeout` for a slot), so
        # redis-py's pools (one per Cluster node) never run dry; +2: the pub/sub connection
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()  # a fast semaphore (C)
        for _ in range(pool_size):
            self._slots.put(None)
        self._max_conns = pool_size + 2
        self._health = health_check_interval
        self._client: Client | None = None
        self._client_lock = threading.Lock()
        self._scripts: dict[str, Any] = {}
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._overflow: set[str] = set()  # prefixes to flush: too many pending keys were lost
        self._pending_lock = threading.Lock()
        self._replaying = threading.Lock()
        self._local = threading.local()  # per thread: the last call failed on transport

    def __repr__(self) -> str:
        user = f", user={self._username!r}" if self._username else ""
        return f"RedisCache({self.target.describe()}{user}, breaker={self.breaker.state})"

    # --- connection -------------------------------------------------------------------------

    def client(self) -> Client:
        """The redis-py client, made on first use (a Cluster client connects when made)."""
        c = self._client
        if c is not None:
            return c
        with self._client_lock:
            if self._client is None:
                self._client = connect(
                    self.target,
                    username=self._username,
                    password=self._password,
                    tls_ca=self._tls_ca,
                    timeout=self._timeout,
                    max_connections=self._max_conns,
                    health_check_interval=self._health,
                )
                self._scripts = {
                    "fill": self._client.register_script(_FILL),
                    "release": self._client.register_script(_RELEASE),
                }
            return self._client

    def pubsub(self) -> Any:
        """A new pub/sub object (the invalidation listener's own connection)."""
        return self.client().pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]

    # --- the one guarded path ---------------------------------------------------------------

    def _run(self, op: str, kind: str, call: Callable[[Client], T]) -> T:
        """Run ``call`` if the breaker allows; failures are counted and raised as _Down."""
        if not self.breaker.allow():
            self.metrics.inc(kind, "l2", "skipped")
            raise _Down
        try:
            self._slots.get(timeout=self._timeout)  # a burst larger than the pool waits a bit
        except queue.Empty:
            self.metrics.inc(kind, "l2", "pool_busy")
            raise _Down(transport=False) from None
        try:
            result = call(self.client())
        except Exception as exc:
            transport = is_transport(exc)
            if transport is None:
                raise  # a bug of ours, not Redis being down
            self._count(op, kind, exc, transport=transport)
            raise _Down(transport) from None
        finally:
            self._slots.put(None)
        self.breaker.success()
        if self._pending or self._overflow:
            self._replay()
        return result

    def _count(self, op: str, kind: str, exc: BaseException, *, transport: bool) -> None:
        event = "oom" if isinstance(exc, rexc.OutOfMemoryError) else "error"
        self.metrics.inc(kind, "l2", event)
        before = self.breaker.state
        if transport:
            self.breaker.failure()
        else:
            self.breaker.success()
        if self.breaker.state == "open" and before == "closed":  # probes failing: debug only
            log.warning("redis cache unavailable, breaker open: %s", self._describe_error(exc, op))
        else:
            log.debug("redis cache %s", self._describe_error(exc, op))

    def _describe_error(self, exc: BaseException, op: str) -> str:
        text = f"{op} failed: {type(exc).__name__}: {exc}"
        secret = self._password.get_secret_value() if self._password else ""
        return text.replace(secret, "***") if secret else text

    # --- the Cache protocol -----------------------------------------------------------------

    def mark(self) -> int:
        """No in-process state at this level."""
        return 0

    def get(self, key: str) -> Hit | None:
        """GET; a miss when Redis is unreachable or the key has an unreplayed invalidation."""
        raw = self.get_raw(key)
        return None if raw is None else self.decode(key, raw)

    def decode(self, key: str, raw: bytes) -> Hit | None:
        """The hit in ``raw``; a foreign or damaged value counts as corrupt and reads as a miss."""
        hit = decode_entry(raw, "l2")
        if hit is None:
            self.metrics.inc(key_kind(key), "l2", "corrupt")
        return hit

    def get_raw(self, key: str) -> bytes | None:
        """The stored bytes of ``key`` (None on a miss or any failure)."""
        self._local.down = False
        try:
            if not self._settled(key):
                return None
            raw = self._run("get", key_kind(key), lambda c: c.get(key))
        except _Down as down:
            self._local.down = down.transport  # this request's next call will not wait again
            return None
        return raw if isinstance(raw, bytes) or raw is None else raw.encode()

    def acquire(self, key: str, *, since: int, lease_ms: int) -> Lease | None:
        """SET <key>:lease <token> NX PX; an unshared lease when Redis cannot take one."""
        down, self._local.down = getattr(self._local, "down", False), False
        unshared = Lease(key, since, "", shared=False)
        token = uuid.uuid4().hex
        try:
            if down or not self._settled(key):
                return unshared
            ok = self._run(
                "acquire",
                key_kind(key),
                lambda c: c.set(lease_key(key), token, nx=True, px=lease_ms),
            )
        except _Down:
            return unshared
        return Lease(key, since, token) if ok else None

    def fill(self, lease: Lease, entry: Entry) -> bool:
        """Store if our lease is still there (Lua, atomic); an invalidation revoked it if not."""
        key = lease.key
        if not lease.shared or not lease.token:
            return False
        if len(entry.payload) > self.max_value_bytes:
            self.metrics.inc(key_kind(key), "l2", "oversize")
            self.release(lease)
            return False
        args = [lease.token, entry.payload, entry.ttl_ms]
        try:
            stored = self._run(
                "fill", key_kind(key), lambda c: self._scripts["fill"]([key, lease_key(key)], args)
            )
        except _Down as down:
            if not down.transport:  # e.g. OOM: Redis answers, so give the lease back
                self.release(lease)
            return False
        if not stored:
            self.metrics.inc(key_kind(key), "l2", "fill_refused")
        return bool(stored)

    def release(self, lease: Lease) -> None:
        """Delete our lease if it is still ours (waiters stop waiting on a dead load)."""
        if not lease.token:
            return
        key = lease_key(lease.key)
        release = self._scripts.get("release")
        if release is None:
            return
        with contextlib.suppress(_Down):
            self._run("release", key_kind(lease.key), lambda c: release([key], [lease.token]))

    def put(self, key: str, entry: Entry) -> bool:
        """SET PX, unconditionally (plain cache-aside)."""
        if len(entry.payload) > self.max_value_bytes:
            self.metrics.inc(key_kind(key), "l2", "oversize")
            return False
        try:
            stored = self._run(
                "put", key_kind(key), lambda c: c.set(key, entry.payload, px=entry.ttl_ms)
            )
        except _Down:
            return False
        return bool(stored)

    def invalidate(self, keys: Sequence[str]) -> None:
        """UNLINK values and leases, then PUBLISH; kept for replay if Redis is unreachable."""
        if not keys:
            return
        try:
            self._run("invalidate", key_kind(keys[0]), lambda c: self._unlink(c, keys))
        except _Down:
            self._defer(keys)

    def _unlink(self, client: Client, keys: Sequence[str]) -> None:
        if isinstance(client, RedisCluster):  # its pipelines refuse multi-key commands
            for key in keys:
                client.unlink(key, lease_key(key))  # one slot: the hash tag
        else:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key, lease_key(key))
            pipe.execute()
        self._publish(client, {"k": list(keys)})

    def _publish(self, client: Client, message: dict[str, Any]) -> None:
        if self.channel is not None:
            client.publish(self.channel, json.dumps({"o": self.origin, **message}))

    def flush(self, prefix: str) -> int:
        """SCAN MATCH <prefix>* and UNLINK in batches (never KEYS, never FLUSHDB)."""
        if not _SAFE_PREFIX.match(prefix):
            raise ValueError(f"refusing to flush outside our namespace: {prefix!r}")
        try:
            return self._run("flush", key_kind(prefix + "x"), lambda c: self._flush(c, prefix))
        except _Down:  # an admin command, not a request: say so instead of failing open
            raise Unavailable(
                f"Redis at {self.target.describe()} did not answer; nothing was flushed",
                hint="check that Redis is up (afdb cache stats), then retry",
            ) from None

    def _flush(self, client: Client, prefix: str) -> int:
        deleted, batch = 0, []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
        self._publish(client, {"p": prefix})
        return deleted

    def count_keys(self, prefix: str, limit: int = 100_000) -> tuple[dict[str, int], bool]:
        """Our keys under ``prefix`` per kind (SCAN, at most ``limit``); True if cut short."""
        if not _SAFE_PREFIX.match(prefix):
            raise ValueError(f"refusing to scan outside our namespace: {prefix!r}")
        counts: dict[str, int] = {}

        def scan(client: Client) -> bool:
            for n, raw in enumerate(client.scan_iter(match=prefix + "*", count=1000)):
                if n >= limit:
                    return True
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                kind = key_kind(key) + (":lease" if key.endswith(":lease") else "")
                counts[kind] = counts.get(kind, 0) + 1
            return False

        try:
            truncated = self._run("count", "-", scan)
        except _Down:
            raise Unavailable(f"Redis at {self.target.describe()} did not answer") from None
        return counts, truncated

    # --- invalidations that could not be delivered -----------------------------------------

    def _defer(self, keys: Sequence[str]) -> None:
        with self._pending_lock:
            for key in keys:
                self._pending[key] = None
            while len(self._pending) > MAX_PENDING:
                lost, _ = self._pending.popitem(last=False)
                self._overflow.add(lost.rsplit(":", 1)[0] + ":")
        self.metrics.inc(key_kind(keys[0]), "l2", "invalidation_deferred", len(keys))

    def _is_pending(self, key: str) -> bool:
        return key in self._pending or any(key.startswith(p) for p in self._overflow)

    def _settled(self, key: str) -> bool:
        """No undelivered invalidation for ``key``; tries to deliver them first (as a probe)."""
        if not (self._pending or self._overflow) or not self._is_pending(key):
            return True
        self._run("replay", key_kind(key), self._deliver)  # _Down: the caller's miss
        return not self._is_pending(key)

    def _replay(self) -> None:
        """After a successful call: deliver deferred invalidations; failures wait for later."""
        try:
            self._deliver(self.client())
        except Exception as exc:
            if is_transport(exc) is None:
                raise
            log.debug("redis cache %s", self._describe_error(exc, "replay"))

    def _deliver(self, client: Client) -> None:
        """Flush overflowed prefixes, UNLINK + PUBLISH pending keys (one thread at a time)."""
        if not self._replaying.acquire(blocking=False):
            return
        try:
            for prefix in list(self._overflow):
                self._flush(client, prefix)
                self._overflow.discard(prefix)
            while self._pending:
                with self._pending_lock:
                    batch = list(self._pending)[:500]
                self._unlink(client, batch)
                with self._pending_lock:
                    for key in batch:
                        self._pending.pop(key, None)
        finally:
            self._replaying.release()

    # --- admin ------------------------------------------------------------------------------

    def ping(self) -> float | None:
        """Round-trip seconds of a PING, or None if Redis does not answer (breaker-guarded)."""
        start = time.perf_counter()
        try:
            self._run("ping", "-", lambda c: c.ping())
        except _Down:
            return None
        return time.perf_counter() - start

    def stats(self) -> dict[str, Any]:
        """Target, breaker state, deferred invalidations, PING time; no credential."""
        rtt = self.ping()
        return {
            "backend": "redis",
            "target": self.target.describe(),
            "user": self._username,
            "breaker": self.breaker.state,
            "breaker_opened": self.breaker.opened,
            "reachable": rtt is not None,
            "ping_ms": None if rtt is None else round(rtt * 1000, 3),
            "pending_invalidations": len(self._pending),
        }

    def close(self) -> None:
        """Close the connection pool(s)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
