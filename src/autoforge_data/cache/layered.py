"""Two levels: the in-process LRU (L1) in front of Redis (L2), kept coherent through pub/sub.

Reads try L1, then L2 (an L2 hit is copied into L1). Fills and invalidations reach both.
Other processes drop their L1 copies when they receive our invalidation on the channel
``afdb:v<schema>:inval``; a background thread (:class:`Listener`) holds that subscription,
pings it, and reconnects with a bounded backoff.

L1 is trusted only while the listener is subscribed and answering: an invalidation published
while we were not listening would be lost, so L1 is emptied whenever the subscription breaks or
is re-made, and nothing is put into L1 until it is healthy again (reads then go to L2 or the
loader). An L1 entry also lives at most ``l1_ttl`` seconds, a bound on what a lost message costs.
When the subscription stops answering its pings (a hung Redis keeps its sockets open), the
listener opens the Redis breaker at once: requests served from L1 would not find out.

Fills reach L1 only after the Redis fill succeeded (L2 orders writers and readers for every
process) and only if no invalidation of the key arrived since the read began (:mod:`.memory`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from autoforge_data.cache.base import Entry, Hit, Lease
from autoforge_data.cache.memory import MemoryCache
from autoforge_data.cache.redis_cache import RedisCache, is_transport

log = logging.getLogger("autoforge_data.cache")


class _Silent(Exception):
    """The subscription stopped answering pings (a hung server keeps its sockets open)."""


class Listener:
    """The pub/sub subscriber thread; ``healthy`` while subscribed and answering pings."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        channel: str,
        origin: str,
        on_keys: Callable[[list[str]], None],
        on_prefix: Callable[[str], object],
        on_gap: Callable[[], None],
        on_down: Callable[[], None],
        heartbeat: float = 0.25,
        max_backoff: float = 2.0,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._ours = channel.removesuffix("inval")  # afdb:v<schema>: - the keys we may drop
        self.origin = origin
        self._on_keys = on_keys
        self._on_prefix = on_prefix
        self._on_gap = on_gap
        self._on_down = on_down
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        self.healthy = False
        self.reconnects = 0
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="afdb-cache-inval", daemon=True)

    def start(self) -> None:
        """Start the thread (it connects in the background; nothing blocks here)."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it (bounded)."""
        self._stop.set()
        if self._thread.is_alive():  # never started when the cache was made with listen=False
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            pubsub, transport = None, False
            try:
                pubsub = self._connect()
                self._listen(pubsub)
                backoff = 0.05
            except Exception as exc:  # any failure: mark, empty L1, retry later
                transport = isinstance(exc, _Silent) or bool(is_transport(exc))
                log.debug("cache invalidation listener: %s", type(exc).__name__)
            finally:
                self._lost(transport)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
            if self._stop.wait(backoff * (0.5 + random.random())):  # noqa: S311 (jitter only)
                return
            backoff = min(backoff * 2, self.max_backoff)
            self.reconnects += 1

    def _listen(self, pubsub: Any) -> None:
        pubsub.subscribe(self.channel)
        subscribed = False
        last_seen = time.monotonic()
        next_ping = last_seen + self.heartbeat
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=min(0.1, self.heartbeat / 2))
            now = time.monotonic()
            if msg is not None:
                last_seen = now
                if msg["type"] == "subscribe":
                    # first confirmation, or redis-py re-subscribed after a silent reconnect:
                    # either way messages may have been missed before it
                    self._on_gap()
                    subscribed = self.healthy = True
                elif msg["type"] == "message" and subscribed:
                    self._handle(msg["data"])
            if now >= next_ping:
                pubsub.ping()
                next_ping = now + self.heartbeat
            if now - last_seen > 3 * self.heartbeat:
                raise _Silent("no answer on the invalidation channel")

    def _handle(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("o") == self.origin:
            return
        self.received += 1
        keys = msg.get("k")
        if isinstance(keys, list):
            self._on_keys([k for k in keys if isinstance(k, str) and k.startswith(self._ours)])
        prefix = msg.get("p")
        if isinstance(prefix, str) and prefix.startswith(self._ours):
            self._on_prefix(prefix)

    def _lost(self, transport: bool) -> None:
        was = self.healthy
        self.healthy = False
        self._on_gap()
        if was and not self._stop.is_set():
            if transport:  # Redis itself stopped answering: don't wait for requests to find out
                self._on_down()
            log.warning("cache invalidation channel lost; in-process cache bypassed until back")


class LayeredCache:
    """L1 (:class:`MemoryCache`) in front of L2 (:class:`RedisCache`); see the module docstring."""

    def __init__(
        self,
        l1: MemoryCache,
        l2: RedisCache,
        *,
        l1_ttl: float = 60.0,
        heartbeat: float = 0.25,
        listen: bool = True,
    ) -> None:
        if l2.channel is None:
            raise ValueError("the Redis level needs a channel to publish invalidations on")
        self.l1 = l1
        self.l2 = l2
        self.l1_ttl = l1_ttl
        self.max_value_bytes = l2.max_value_bytes
        self.listener = Listener(
            l2.pubsub,
            channel=l2.channel,
            origin=l2.origin,
            on_keys=l1.invalidate,
            on_prefix=l1.flush,
            on_gap=l1.clear,
            on_down=l2.breaker.trip,
            heartbeat=heartbeat,
        )
        if listen:
            self.listener.start()

    def __repr__(self) -> str:
        return f"LayeredCache({self.l1!r}, {self.l2!r})"

    def _l1_ok(self) -> bool:
        return self.listener.healthy and self.l1.max_entries > 0

    def mark(self) -> int:
        """L1's invalidation sequence number."""
        return self.l1.mark()

    def get(self, key: str) -> Hit | None:
        """L1, else L2 (copied into L1 unless an invalidation arrived meanwhile)."""
        if self.l1.max_entries:
            hit = self.l1.get(key)
            if hit is not None:
                return hit
        since = self.l1.mark()
        raw = self.l2.get_raw(key)
        if raw is None:
            return None
        hit = self.l2.decode(key, raw)
        if hit is not None and self._l1_ok():
            deadline = time.time() + self.l1_ttl
            self.l1.put_hit(key, hit, since=since, deadline=deadline, size=len(raw))
        return hit

    def acquire(self, key: str, *, since: int, lease_ms: int) -> Lease | None:
        """The Redis lease (unshared when Redis is unreachable)."""
        return self.l2.acquire(key, since=since, lease_ms=lease_ms)

    def fill(self, lease: Lease, entry: Entry) -> bool:
        """Fill L2 with the lease; only then L1, if no invalidation arrived since the read."""
        if not self.l2.fill(lease, entry):
            return False
        if self._l1_ok():
            deadline = time.time() + self.l1_ttl
            self.l1.store(lease.key, entry, since=lease.since, deadline=deadline)
        return True

    def release(self, lease: Lease) -> None:
        """Give the Redis lease back."""
        self.l2.release(lease)

    def put(self, key: str, entry: Entry) -> bool:
        """Unconditional store in both levels (plain cache-aside)."""
        stored = self.l2.put(key, entry)
        if stored and self._l1_ok():
            self.l1.store(key, entry, since=None, deadline=time.time() + self.l1_ttl)
        return stored

    def invalidate(self, keys: Sequence[str]) -> None:
        """L2 first (and publish), then L1: an L1 copy made from the old L2 value is refused."""
        self.l2.invalidate(keys)
        self.l1.invalidate(keys)

    def flush(self, prefix: str) -> int:
        """Flush L2 (other processes' L1 hear of it) and L1."""
        self.l1.flush(prefix)
        deleted = self.l2.flush(prefix)
        self.l1.flush(prefix)
        return deleted

    def stats(self) -> dict[str, Any]:
        """Both levels and the listener."""
        return {
            "backend": "layered",
            "l1": self.l1.stats(),
            "l2": self.l2.stats(),
            "listener": {
                "healthy": self.listener.healthy,
                "reconnects": self.listener.reconnects,
                "received": self.listener.received,
            },
        }

    def close(self) -> None:
        """Stop the listener, close Redis, drop L1."""
        self.listener.stop()
        self.l2.close()
        self.l1.close()
