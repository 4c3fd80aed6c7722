"""The in-process cache: an LRU with per-entry TTL, bounded in entries and bytes.

It is the whole cache when no Redis is configured, and the first level (L1) in front of Redis
otherwise. Values are stored decoded (a hit costs a dict lookup, no JSON) and are shared between
callers: treat them as read-only, or give :mod:`.aside` a codec that builds immutable objects.

Stale fills are refused with an *invalidation log*: every invalidation takes the next sequence
number and records it for its key; a fill carries the sequence number seen before its read
(:meth:`MemoryCache.mark`) and is refused if its key was invalidated since. The log is bounded;
when an old record falls out, every fill older than it is refused (safe, at worst a lost fill).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from autoforge_data.cache.base import Entry, Hit, Lease, key_kind
from autoforge_data.cache.metrics import Metrics

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
LOG_SIZE = 4096


class MemoryCache:
    """LRU + TTL + size bound, thread-safe; see the module docstring."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_value_bytes: int = 1_048_576,
        metrics: Metrics | None = None,
        level: str = "l1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self.metrics = metrics or Metrics()
        self.level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, int, Hit]] = OrderedDict()
        self._bytes = 0
        self._seq = 0
        self._floor = 0  # fills that saw a sequence number below this are refused
        self._log: OrderedDict[str, int] = OrderedDict()
        self.evictions = 0

    def __repr__(self) -> str:
        return f"MemoryCache(entries={len(self._data)}/{self.max_entries})"

    def __len__(self) -> int:
        return len(self._data)

    # --- reads ------------------------------------------------------------------------------

    def mark(self) -> int:
        """The current invalidation sequence number."""
        return self._seq

    def get(self, key: str) -> Hit | None:
        """The live entry of ``key`` (refreshing its LRU position), or None."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return item[2]

    def changed_since(self, key: str, since: int) -> bool:
        """Was ``key`` (or everything) invalidated after sequence number ``since``?"""
        with self._lock:
            return self._changed(key, since)

    def _changed(self, key: str, since: int) -> bool:
        if self._floor > since:
            return True
        seq = self._log.get(key)
        return seq is not None and seq > since

    # --- fills ------------------------------------------------------------------------------

    def acquire(self, key: str, *, since: int, lease_ms: int) -> Lease | None:
        """In one process the single-flight is the lease: always granted."""
        return Lease(key, since, "", shared=True)

    def fill(self, lease: Lease, entry: Entry) -> bool:
        """Store unless ``lease.key`` was invalidated since ``lease.since``."""
        return self.store(lease.key, entry, since=lease.since)

    def release(self, lease: Lease) -> None:
        """Nothing to give back in-process."""

    def put(self, key: str, entry: Entry) -> bool:
        """Store unconditionally."""
        return self.store(key, entry, since=None)

    def store(
        self, key: str, entry: Entry, *, since: int | None, deadline: float | None = None
    ) -> bool:
        """Store ``entry`` until its expiry (or ``deadline`` if sooner); refused if ``key`` was
        invalidated after sequence number ``since``."""
        size = len(entry.payload)
        if size > self.max_value_bytes:
            self.metrics.inc(key_kind(key), self.level, "oversize")
            return False
        until = entry.expires_at if deadline is None else min(deadline, entry.expires_at)
        if self.max_entries == 0 or until <= self._clock():
            return False
        value = json.loads(entry.payload)[3]  # our own copy: callers may mutate theirs
        hit = Hit(value, entry.expires_at, entry.cost, self.level)
        with self._lock:
            if since is not None and self._changed(key, since):
                self.metrics.inc(key_kind(key), self.level, "fill_refused")
                return False
            self._drop(key)
            self._data[key] = (until, size, hit)
            self._bytes += size
            self._evict()
        return True

    def put_hit(self, key: str, hit: Hit, *, since: int, deadline: float, size: int) -> bool:
        """Keep a hit read from another level, refused if ``key`` was invalidated since."""
        if self.max_entries == 0 or size > self.max_value_bytes:
            return False
        mine = Hit(hit.value, hit.expires_at, hit.cost, self.level)
        with self._lock:
            if self._changed(key, since):
                return False
            self._drop(key)
            self._data[key] = (min(deadline, hit.expires_at), size, mine)
            self._bytes += size
            self._evict()
        return True

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    def _evict(self) -> None:
        while self._data and (len(self._data) > self.max_entries or self._bytes > self.max_bytes):
            _, (_, size, _) = self._data.popitem(last=False)
            self._bytes -= size
            self.evictions += 1

    # --- invalidation -----------------------------------------------------------------------

    def invalidate(self, keys: Sequence[str]) -> None:
        """Drop ``keys`` and refuse fills of them that started before now."""
        with self._lock:
            for key in keys:
                self._seq += 1
                self._drop(key)
                self._log[key] = self._seq
                self._log.move_to_end(key)
            while len(self._log) > LOG_SIZE:
                _, seq = self._log.popitem(last=False)
                self._floor = max(self._floor, seq)

    def flush(self, prefix: str) -> int:
        """Drop every entry under ``prefix`` and refuse every fill in flight; returns how many."""
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for key in doomed:
                self._drop(key)
            self._reset()
        return len(doomed)

    def clear(self) -> None:
        """Drop everything and refuse every fill in flight (used when invalidations may be lost)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self._reset()

    def _reset(self) -> None:
        self._seq += 1
        self._floor = self._seq
        self._log.clear()

    def stats(self) -> dict[str, Any]:
        """Entries, bytes and evictions."""
        return {
            "backend": "memory",
            "entries": len(self._data),
            "max_entries": self.max_entries,
            "bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
        }

    def close(self) -> None:
        """Drop everything."""
        self.clear()
